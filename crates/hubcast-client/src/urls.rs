//! From the server's base URL to the WebSocket endpoint and the history route.

use crate::types::ClientError;

/// The endpoints derived from a base URL (`http(s)://host:port[/prefix]` or `ws(s)://…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Urls {
    /// `ws(s)://host:port[/prefix]/v1/ws`
    pub ws: String,
    /// `http(s)://host:port[/prefix]`
    pub http: String,
}

impl Urls {
    pub fn derive(url: &str) -> Result<Urls, ClientError> {
        let bad = || {
            ClientError::new(
                "bad_request",
                format!("unsupported URL {url:?} (use http(s):// or ws(s)://)"),
            )
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        let (ws, http) = match scheme.to_ascii_lowercase().as_str() {
            "ws" | "http" => ("ws", "http"),
            "wss" | "https" => ("wss", "https"),
            _ => return Err(bad()),
        };
        let rest = rest.split(['?', '#']).next().unwrap_or("");
        let (host, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, ""),
        };
        if host.is_empty() {
            return Err(bad());
        }
        let mut path = path.trim_end_matches('/');
        if let Some(stripped) = path.strip_suffix("/v1/ws") {
            path = stripped;
        }
        Ok(Urls {
            ws: format!("{ws}://{host}{path}/v1/ws"),
            http: format!("{http}://{host}{path}"),
        })
    }

    /// `GET …/v1/rooms/{room}/events?after=&limit=` (room names need no escaping).
    pub fn history(&self, room: &str, after: u64, limit: u64) -> String {
        format!(
            "{}/v1/rooms/{room}/events?after={after}&limit={limit}",
            self.http
        )
    }
}

/// Percent-encodes a query component like JavaScript's `encodeURIComponent`.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_endpoints() {
        let u = Urls::derive("http://h:8787").unwrap();
        assert_eq!(u.ws, "ws://h:8787/v1/ws");
        assert_eq!(u.http, "http://h:8787");
        let u = Urls::derive("wss://h/prefix/v1/ws/").unwrap();
        assert_eq!(u.ws, "wss://h/prefix/v1/ws");
        assert_eq!(u.http, "https://h/prefix");
        assert_eq!(
            u.history("r", 3, 10),
            "https://h/prefix/v1/rooms/r/events?after=3&limit=10"
        );
        assert!(Urls::derive("ftp://h").is_err());
        assert_eq!(encode_component("a b+c/é"), "a%20b%2Bc%2F%C3%A9");
    }
}
