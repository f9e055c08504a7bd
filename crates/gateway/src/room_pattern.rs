//! Room patterns in configuration: which rooms a hook (and later a webhook subscription) is for.
//! A pattern is a room id in which `*` stands for any run of characters: `game:*`, `*-support`,
//! `*` for every room.

/// One pattern, checked at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomPattern {
    /// The pattern split at its stars: one piece means no star.
    pieces: Vec<String>,
}

impl RoomPattern {
    /// Parses a pattern: 1 to 128 printable ASCII characters without spaces or commas.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        if pattern.is_empty()
            || pattern.len() > 128
            || !pattern.bytes().all(|b| b.is_ascii_graphic() && b != b',')
        {
            return Err(format!(
                "room pattern {pattern:?} must be 1-128 printable ASCII characters"
            ));
        }
        Ok(Self {
            pieces: pattern.split('*').map(str::to_owned).collect(),
        })
    }

    pub fn matches(&self, room: &str) -> bool {
        let [first, middle @ .., last] = self.pieces.as_slice() else {
            return self.pieces.first().is_some_and(|exact| exact == room);
        };
        if room.len() < first.len() + last.len()
            || !room.starts_with(first.as_str())
            || !room.ends_with(last.as_str())
        {
            return false;
        }
        // The middle pieces, in order, in what the first and last pieces leave; taking each at
        // its earliest place leaves the most room for the next.
        let mut rest = &room[first.len()..room.len() - last.len()];
        for piece in middle {
            match rest.find(piece.as_str()) {
                Some(at) => rest = &rest[at + piece.len()..],
                None => return false,
            }
        }
        true
    }
}

/// Several patterns: a room matches when any does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomPatterns(Vec<RoomPattern>);

impl RoomPatterns {
    pub fn parse(patterns: &[String]) -> Result<Self, String> {
        patterns
            .iter()
            .map(|p| RoomPattern::parse(p))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn matches(&self, room: &str) -> bool {
        self.0.iter().any(|p| p.matches(room))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, room: &str) -> bool {
        RoomPattern::parse(pattern).expect("valid").matches(room)
    }

    #[test]
    fn stars_stand_for_any_run_of_characters() {
        for (pattern, room) in [
            ("*", "anything"),
            ("*", "x"),
            ("game:*", "game:1"),
            ("game:*", "game:"),
            ("*-support", "acme-support"),
            ("a*b*c", "abc"),
            ("a*b*c", "a-b-b-c"),
            ("lobby", "lobby"),
            ("*:*", "dm:a:b"),
            ("**", "x"),
            ("*ab", "abab"),
        ] {
            assert!(matches(pattern, room), "{pattern} should match {room}");
        }
        for (pattern, room) in [
            ("game:*", "games:1"),
            ("*-support", "support"),
            ("lobby", "lobby2"),
            ("lobby", "a-lobby"),
            ("a*b*c", "acb"),
            ("a*c", "ab"),
            ("*ab", "aba"),
        ] {
            assert!(!matches(pattern, room), "{pattern} should not match {room}");
        }
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["", "a b", "a,b", &"x".repeat(129)] {
            assert!(RoomPattern::parse(bad).is_err(), "{bad:?}");
        }
        let any = RoomPatterns::parse(&["game:*".to_owned(), "lobby".to_owned()]).expect("valid");
        assert!(any.matches("lobby") && any.matches("game:7") && !any.matches("chat"));
        assert!(!RoomPatterns::default().matches("lobby"));
    }
}
