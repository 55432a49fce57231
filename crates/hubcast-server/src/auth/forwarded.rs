//! Parsing the hops of forwarded-address headers. Each hop is `Some(address)`
//! or `None` for one that is not an address.

use std::net::{IpAddr, SocketAddr};

/// `X-Forwarded-For: 192.0.2.1, 198.51.100.7:4711, [2001:db8::1]:443`.
pub fn x_forwarded_for(line: &[u8], hops: &mut Vec<Option<IpAddr>>) {
    let Ok(line) = std::str::from_utf8(line) else {
        hops.push(None);
        return;
    };
    hops.extend(
        line.split(',')
            .map(str::trim)
            .filter(|hop| !hop.is_empty())
            .map(node),
    );
}

/// RFC 7239: `Forwarded: for=192.0.2.60;proto=http, for="[2001:db8:cafe::17]:4711"`.
/// An element without `for=` is a hop that is not an address.
pub fn forwarded(line: &[u8], hops: &mut Vec<Option<IpAddr>>) {
    let Ok(line) = std::str::from_utf8(line) else {
        hops.push(None);
        return;
    };
    for element in split_unquoted(line, ',') {
        if element.trim().is_empty() {
            continue;
        }
        let value = split_unquoted(element, ';')
            .filter_map(|pair| pair.split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
            .and_then(|(_, value)| unquote(value.trim()));
        hops.push(value.as_deref().and_then(node));
    }
}

/// A node as proxies write it: an address, with or without a port;
/// IPv6 bare or in brackets. `None` for anything else (`unknown`,
/// `_hidden`, a name).
pub fn node(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Some(address.ip().to_canonical());
    }
    let bracketed = text.strip_prefix('[')?.strip_suffix(']')?;
    bracketed
        .parse::<std::net::Ipv6Addr>()
        .ok()
        .map(|ip| IpAddr::V6(ip).to_canonical())
}

/// Splits on `separator` outside double-quoted strings.
fn split_unquoted(text: &str, separator: char) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    let mut escaped = false;
    text.split(move |c: char| {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == separator && !quoted {
            return true;
        }
        false
    })
}

/// A token, or a quoted-string with its escapes undone; `None` if a quote
/// is unbalanced.
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return (!value.contains('"')).then(|| value.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}
