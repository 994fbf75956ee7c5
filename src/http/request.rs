//! A read-only view of the request headers the host handed over.

/// The request as the rules see it. Header names are lower case (HTTP/2 and Envoy's header map).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub scheme: &'a str,
    /// `:authority` as sent, port included.
    pub authority: &'a str,
    /// `:path` with its query string.
    pub path: &'a str,
    /// The port the request arrived on (Envoy's `destination.port`), when the rules need it.
    pub listener_port: Option<u16>,
    headers: &'a [(String, String)],
}

impl<'a> Request<'a> {
    /// Builds the view from a header list that carries Envoy's pseudo-headers.
    pub fn from_headers(headers: &'a [(String, String)]) -> Self {
        let mut req = Request {
            method: "",
            scheme: "http",
            authority: "",
            path: "/",
            listener_port: None,
            headers,
        };
        for (name, value) in headers {
            match name.as_str() {
                ":method" => req.method = value,
                ":scheme" => req.scheme = value,
                ":authority" => req.authority = value,
                ":path" => req.path = value,
                _ => {}
            }
        }
        req
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.header_values(name).next()
    }

    /// Every value of header `name`, in order (a header may be sent more than once).
    pub fn header_values<'n>(&self, name: &'n str) -> impl DoubleEndedIterator<Item = &'a str> + 'n
    where
        'a: 'n,
    {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The path without query string or fragment, as Envoy's route path matchers see it.
    pub fn path_only(&self) -> &'a str {
        // Bytes, not chars: both are ASCII, and at opt-level "z" a char-set `find` decoded
        // every character and made route matching 3x slower (it runs once per route).
        let end = self
            .path
            .bytes()
            .position(|b| b == b'?' || b == b'#')
            .unwrap_or(self.path.len());
        &self.path[..end]
    }

    /// The query string after `?` (without fragment), if any.
    pub fn query(&self) -> Option<&'a str> {
        let q = &self.path[self.path.find('?')? + 1..];
        Some(&q[..q.find('#').unwrap_or(q.len())])
    }

    /// The first value of query parameter `name` (undecoded, like Envoy's query matcher);
    /// a bare `name` with no `=` has the value "".
    pub fn query_param(&self, name: &str) -> Option<&'a str> {
        self.query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }

    /// Host without port, as the VirtualService host index is keyed (case is the caller's).
    pub fn host(&self) -> &'a str {
        split_host_port(self.authority).0
    }

    /// The port in `:authority`, or the scheme's default.
    pub fn port(&self) -> Option<u16> {
        match split_host_port(self.authority).1 {
            Some(p) => p.parse().ok(),
            None => match self.scheme {
                "https" => Some(443),
                "http" => Some(80),
                _ => None,
            },
        }
    }

    /// The value of cookie `name` from the `cookie` header.
    pub fn cookie(&self, name: &str) -> Option<&'a str> {
        self.header("cookie")?.split(';').find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then_some(v)
        })
    }
}

/// Splits `host[:port]`, handling bracketed IPv6 literals.
pub fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') {
        if let Some(end) = authority.find(']') {
            let rest = &authority[end + 1..];
            return (&authority[..=end], rest.strip_prefix(':'));
        }
        return (authority, None);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (authority, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_pseudo_headers_query_and_cookies() {
        let h = headers(&[
            (":method", "GET"),
            (":authority", "Demo.App:8080"),
            (":path", "/a/b?x=1&flag&y=2#frag"),
            (":scheme", "http"),
            ("cookie", "a=1; user=alice"),
        ]);
        let r = Request::from_headers(&h);
        assert_eq!(r.path_only(), "/a/b");
        assert_eq!(r.query_param("x"), Some("1"));
        assert_eq!(r.query_param("flag"), Some(""));
        assert_eq!(r.query_param("y"), Some("2"));
        assert_eq!(r.query_param("z"), None);
        assert_eq!(r.host(), "Demo.App");
        assert_eq!(r.port(), Some(8080));
        assert_eq!(r.cookie("user"), Some("alice"));
    }

    #[test]
    fn splits_ipv6_authorities() {
        assert_eq!(split_host_port("[::1]:80"), ("[::1]", Some("80")));
        assert_eq!(split_host_port("[::1]"), ("[::1]", None));
        assert_eq!(split_host_port("host"), ("host", None));
    }
}
