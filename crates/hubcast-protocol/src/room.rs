//! Room names: the one place that decides what a valid room name is.
//!
//! A room name is 1 to 128 bytes of `A-Z a-z 0-9 _ - : . @ =`. The charset is
//! small on purpose: names appear in URLs, in SQL keys and (in cluster mode) in
//! NATS subjects, and none of them need escaping beyond what this allows.

use std::fmt;
use std::sync::Arc;

/// The longest room name accepted, in bytes.
pub const MAX_ROOM_NAME_LEN: usize = 128;

/// A validated room name. Cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(Arc<str>);

/// Why a room name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomNameError {
    #[error("room name is empty")]
    Empty,
    #[error("room name is longer than {MAX_ROOM_NAME_LEN} bytes")]
    TooLong,
    #[error("room name has a character outside A-Z a-z 0-9 _ - : . @ =")]
    BadCharacter,
}

impl RoomName {
    /// Validates `name` and wraps it.
    pub fn parse(name: &str) -> Result<RoomName, RoomNameError> {
        if name.is_empty() {
            return Err(RoomNameError::Empty);
        }
        if name.len() > MAX_ROOM_NAME_LEN {
            return Err(RoomNameError::TooLong);
        }
        if !name.bytes().all(is_room_byte) {
            return Err(RoomNameError::BadCharacter);
        }
        Ok(RoomName(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_room_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'.' | b'@' | b'=')
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl serde::Serialize for RoomName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::ops::Deref for RoomName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, expected: Result<(), RoomNameError>) {
        assert_eq!(RoomName::parse(name).map(|_| ()), expected, "{name:?}");
    }

    #[test]
    fn room_names() {
        check("market:42", Ok(()));
        check("chat.general", Ok(()));
        check("user@example.com", Ok(()));
        check("a-b_c=d", Ok(()));
        check(&"x".repeat(128), Ok(()));
        check("", Err(RoomNameError::Empty));
        check(&"x".repeat(129), Err(RoomNameError::TooLong));
        check("has space", Err(RoomNameError::BadCharacter));
        check("slash/room", Err(RoomNameError::BadCharacter));
        check("star*", Err(RoomNameError::BadCharacter));
        check("é", Err(RoomNameError::BadCharacter));
        check("nul\0", Err(RoomNameError::BadCharacter));
    }
}
