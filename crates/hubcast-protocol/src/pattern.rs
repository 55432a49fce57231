//! Room patterns in grants and API keys: `*` stands for any run of characters.

/// Glob match where `*` stands for any run of characters (room names cannot
/// contain `*`, so patterns are unambiguous).
pub fn pattern_matches(pattern: &str, room: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = room.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    if parts.is_empty() {
        return rest.is_empty();
    }
    for (i, part) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let check = |p: &str, r: &str, expected: bool| {
            assert_eq!(pattern_matches(p, r), expected, "{p} vs {r}")
        };
        check("market:*", "market:42", true);
        check("market:*", "market:", true);
        check("market:*", "markets:1", false);
        check("market:42", "market:42", true);
        check("market:42", "market:421", false);
        check("*", "anything", true);
        check("*:chat", "team1:chat", true);
        check("*:chat", "team1:chats", false);
        check("a*b*c", "aXbYc", true);
        check("a*b*c", "aXc", false);
        check("a*a", "a", false);
    }
}
