//! `rpc`: a call to the app's backend (the rpc hook), answered with what it returns.

use switchboard_protocol::{AckResult, ErrorCode, is_event_name};

use super::{Connection, Session};
use crate::error::{BackendError, SessionError};
use crate::hooks::Decision;

impl<C: Connection> Session<C> {
    pub(super) async fn call_rpc(
        &mut self,
        method: String,
        data: serde_json::Value,
    ) -> Result<Option<AckResult>, SessionError> {
        if !is_event_name(&method) {
            return Err(SessionError::refused(
                ErrorCode::InvalidField,
                "method must match [a-z][a-z0-9:_-]{0,63}",
            ));
        }
        let Some(answer) = self
            .app
            .hooks
            .rpc(&self.user, &self.conn, &method, &data)
            .await
        else {
            return Err(SessionError::refused(
                ErrorCode::NotSupported,
                "rpc is not enabled on this server (no SWITCHBOARD_HOOK_RPC_URL)",
            ));
        };
        match answer.map_err(|e| BackendError::Hook("rpc", e))? {
            Decision::Allow(data) => Ok(Some(AckResult::Rpc { data })),
            Decision::Deny(reason) => Err(SessionError::refused(ErrorCode::Denied, reason)),
        }
    }
}
