//! Socket.IO at `/socket.io/` (`SWITCHBOARD_SOCKETIO_PATH`, docs/socketio.md): the packets of
//! Engine.IO v4 and Socket.IO v5 (`packet.rs`), the mapping between events and the protocol's
//! frames (`mapping.rs`), and the checks of a request to the path. The connection layer that
//! drives a session with them is `session/socketio.rs`.

pub mod mapping;
pub mod packet;
pub mod recovery;

use hyper::{Response, StatusCode};

use crate::http::{self, Body};

/// Engine.IO's refusals of a request, as its servers answer them: HTTP 400 with
/// `{"code": <n>, "message": ...}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineRefusal {
    /// `transport` is missing or not one served (`websocket`).
    TransportUnknown,
    /// `EIO` is not 4.
    UnsupportedVersion,
}

impl EngineRefusal {
    pub fn response(self) -> Response<Body> {
        let (code, message) = match self {
            Self::TransportUnknown => (0, "Transport unknown"),
            Self::UnsupportedVersion => (5, "Unsupported protocol version"),
        };
        http::json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({ "code": code, "message": message }),
        )
    }
}

/// Checks the query of a request to the Socket.IO path: `EIO=4&transport=websocket`.
pub fn check_query(query: Option<&str>) -> Result<(), EngineRefusal> {
    let params = http::parse_query(query.unwrap_or_default());
    let value = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if value("EIO") != Some("4") {
        return Err(EngineRefusal::UnsupportedVersion);
    }
    if value("transport") != Some("websocket") {
        return Err(EngineRefusal::TransportUnknown);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_engine_io_4_over_websocket_is_served() {
        assert_eq!(check_query(Some("EIO=4&transport=websocket")), Ok(()));
        assert_eq!(check_query(Some("EIO=4&transport=websocket&t=abc")), Ok(()));
        assert_eq!(
            check_query(Some("EIO=3&transport=websocket")),
            Err(EngineRefusal::UnsupportedVersion)
        );
        assert_eq!(check_query(None), Err(EngineRefusal::UnsupportedVersion));
        assert_eq!(
            check_query(Some("EIO=4&transport=polling")),
            Err(EngineRefusal::TransportUnknown)
        );
    }
}
