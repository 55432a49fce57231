//! Pusher channel names: what kind a channel is, and which hubcast room it
//! is stored as.
//!
//! A channel is the room `{room_prefix}{escaped name}`. Pusher channel names
//! may use `A-Z a-z 0-9 _ - = @ , . ;`, and `#` starts the server-to-user
//! channels (`#server-to-user-{user_id}`); rooms allow all of these but `,`,
//! `;` and `#`, and allow `:`, which channel names never contain. So `:` is
//! the escape character: `,` is stored as `:2C`, `;` as `:3B` and `#` as
//! `:23`, a mapping that is one-to-one and reversible (`presence-a,b` →
//! `pusher:app1:presence-a:2Cb`, `#server-to-user-7` →
//! `pusher:app1::23server-to-user-7`).
//! A room holds at most 128 bytes, so a channel may be as long as that
//! leaves after the prefix (Pusher allows 164; see docs/pusher.md).

use crate::room::{RoomName, MAX_ROOM_NAME_LEN};

/// What a channel's name prefix makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    Public,
    /// `private-`: subscribing needs an authorization signature.
    Private,
    /// `private-encrypted-`: as private; the payloads are end-to-end
    /// encrypted by the clients and relayed as they are.
    Encrypted,
    /// `presence-`: private, with a member list.
    Presence,
    /// `#server-to-user-{user_id}`: the events the app sends to one user
    /// (`sendToUser`); only a socket signed in as that user may subscribe.
    ServerToUser,
}

/// The name prefix of a user's server-to-user channel.
pub const SERVER_TO_USER: &str = "#server-to-user-";

/// A valid channel name with its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
    /// `cache-`, `private-cache-`, `presence-cache-`, `private-encrypted-cache-`:
    /// a subscriber gets the channel's last event first.
    pub cache: bool,
}

/// Why a channel name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("channel name is empty")]
    Empty,
    #[error("channel name is longer than {0} bytes")]
    TooLong(usize),
    #[error("channel name has a character outside A-Z a-z 0-9 _ - = @ , . ;")]
    BadCharacter,
}

impl Channel {
    /// Checks `name` for an app whose rooms start with `prefix`.
    pub fn parse(name: &str, prefix: &str) -> Result<Channel, ChannelError> {
        if name.is_empty() {
            return Err(ChannelError::Empty);
        }
        // `#` is reserved: it starts server-to-user channels only.
        let user = name.strip_prefix(SERVER_TO_USER);
        if user == Some("") {
            return Err(ChannelError::Empty);
        }
        if !user.unwrap_or(name).bytes().all(is_channel_byte) {
            return Err(ChannelError::BadCharacter);
        }
        let max = max_channel_len(name, prefix);
        if name.len() > max {
            return Err(ChannelError::TooLong(max));
        }
        let (kind, rest) = if user.is_some() {
            (ChannelKind::ServerToUser, "")
        } else if let Some(rest) = name.strip_prefix("private-encrypted-") {
            (ChannelKind::Encrypted, rest)
        } else if let Some(rest) = name.strip_prefix("private-") {
            (ChannelKind::Private, rest)
        } else if let Some(rest) = name.strip_prefix("presence-") {
            (ChannelKind::Presence, rest)
        } else {
            (ChannelKind::Public, name)
        };
        Ok(Channel {
            name: name.to_owned(),
            kind,
            cache: rest.starts_with("cache-"),
        })
    }

    /// Whether subscribing needs an authorization signature.
    pub fn needs_auth(&self) -> bool {
        !matches!(self.kind, ChannelKind::Public | ChannelKind::ServerToUser)
    }

    /// The user of a server-to-user channel.
    pub fn user(&self) -> Option<&str> {
        self.name.strip_prefix(SERVER_TO_USER)
    }

    /// Whether clients may send `client-` events on it (when the app allows).
    pub fn takes_client_events(&self) -> bool {
        matches!(self.kind, ChannelKind::Private | ChannelKind::Presence)
    }

    /// The room this channel is stored as.
    pub fn room(&self, prefix: &str) -> RoomName {
        room_of(&self.name, prefix).expect("a parsed channel maps to a valid room")
    }
}

/// The room of channel `name` (a valid channel name) under `prefix`.
pub fn room_of(name: &str, prefix: &str) -> Option<RoomName> {
    RoomName::parse(&format!("{prefix}{}", escape(name))).ok()
}

/// A channel name (or the start of one) as it is spelled in its room's name.
pub fn escape(name: &str) -> String {
    let mut escaped = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        match c {
            ',' => escaped.push_str(":2C"),
            ';' => escaped.push_str(":3B"),
            '#' => escaped.push_str(":23"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// The channel a room of `prefix` stores, or `None` for another room.
pub fn channel_of(room: &str, prefix: &str) -> Option<String> {
    let escaped = room.strip_prefix(prefix)?;
    let mut name = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(i) = rest.find(':') {
        name.push_str(&rest[..i]);
        match rest.get(i + 1..i + 3) {
            Some("2C") => name.push(','),
            Some("3B") => name.push(';'),
            Some("23") => name.push('#'),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    name.push_str(rest);
    Some(name)
}

/// The longest `name` may be under `prefix`, counting its escapes.
fn max_channel_len(name: &str, prefix: &str) -> usize {
    let escapes = name
        .bytes()
        .filter(|b| matches!(b, b',' | b';' | b'#'))
        .count();
    MAX_ROOM_NAME_LEN
        .saturating_sub(prefix.len())
        .saturating_sub(2 * escapes)
}

fn is_channel_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'=' | b'@' | b',' | b'.' | b';')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, expected: Result<(ChannelKind, bool, &str), ChannelError>) {
        let parsed = Channel::parse(name, "pusher:a:");
        let got = parsed
            .as_ref()
            .map(|c| (c.kind, c.cache, c.room("pusher:a:").to_string()))
            .map_err(Clone::clone);
        let expected = expected.map(|(k, c, r)| (k, c, r.to_owned()));
        assert_eq!(got, expected, "{name:?}");
        if let Ok(channel) = parsed {
            let room = channel.room("pusher:a:");
            assert_eq!(channel_of(&room, "pusher:a:").as_deref(), Some(name));
        }
    }

    #[test]
    fn channels_and_their_rooms() {
        use ChannelKind::*;
        check("chat", Ok((Public, false, "pusher:a:chat")));
        check("cache-prices", Ok((Public, true, "pusher:a:cache-prices")));
        check("private-x", Ok((Private, false, "pusher:a:private-x")));
        check(
            "private-cache-x",
            Ok((Private, true, "pusher:a:private-cache-x")),
        );
        check(
            "presence-r.1",
            Ok((Presence, false, "pusher:a:presence-r.1")),
        );
        check(
            "presence-cache-r",
            Ok((Presence, true, "pusher:a:presence-cache-r")),
        );
        check(
            "private-encrypted-x",
            Ok((Encrypted, false, "pusher:a:private-encrypted-x")),
        );
        check("a,b;c=d@e", Ok((Public, false, "pusher:a:a:2Cb:3Bc=d@e")));
        check("", Err(ChannelError::Empty));
        check("a:b", Err(ChannelError::BadCharacter));
        check("a b", Err(ChannelError::BadCharacter));
        check(
            "#server-to-user-1",
            Ok((ServerToUser, false, "pusher:a::23server-to-user-1")),
        );
        check(
            "#server-to-user-a.b@c",
            Ok((ServerToUser, false, "pusher:a::23server-to-user-a.b@c")),
        );
        check("#server-to-user-", Err(ChannelError::Empty));
        check("#server-to-user-a#b", Err(ChannelError::BadCharacter));
        check("#other", Err(ChannelError::BadCharacter));
        check("a#b", Err(ChannelError::BadCharacter));
        check(
            &"x".repeat(119),
            Ok((Public, false, &format!("pusher:a:{}", "x".repeat(119)))),
        );
        check(&"x".repeat(120), Err(ChannelError::TooLong(119)));
        check(
            &format!("{},", "x".repeat(117)),
            Err(ChannelError::TooLong(117)),
        );
    }

    #[test]
    fn rooms_of_other_apps_or_bad_escapes_are_no_channels() {
        assert_eq!(channel_of("pusher:b:chat", "pusher:a:"), None);
        assert_eq!(channel_of("pusher:a:x:41", "pusher:a:"), None);
        assert_eq!(channel_of("pusher:a:x:2", "pusher:a:"), None);
        assert_eq!(channel_of("chat", "").as_deref(), Some("chat"));
    }
}
