//! `google.api.http` path templates (AIP-127): literal segments, `*` (one segment), `**` (the
//! rest), variables `{field.path}` and `{field.path=pattern}`, and a trailing `:verb`.

/// One token of a flattened template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `**`: one or more segments.
    Rest,
    /// A variable starts: the field it binds.
    Open(String),
    /// The variable ends.
    Close,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    tokens: Vec<Token>,
    verb: Option<String>,
    /// Literal segments, for ordering routes (more literal first).
    literals: usize,
}

/// A template that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadTemplate(pub String);

impl Template {
    /// Parses `/v1/{name=organizations/*/customers/*}:undelete`.
    ///
    /// # Errors
    /// A template without a leading `/`, with an unclosed or nested variable, or empty parts.
    pub fn parse(text: &str) -> Result<Self, BadTemplate> {
        let bad = || BadTemplate(text.to_owned());
        let rest = text.strip_prefix('/').ok_or_else(bad)?;
        // The verb follows the last `:` outside braces.
        let (path, verb) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('}') && !rest[i..].contains('/') => {
                (&rest[..i], Some(rest[i + 1..].to_owned()))
            }
            _ => (rest, None),
        };
        let mut tokens = Vec::new();
        let mut segments = Vec::new();
        let mut depth = 0usize;
        let mut current = String::new();
        for c in path.chars() {
            match c {
                '{' if depth == 0 => depth = 1,
                '}' if depth == 1 => depth = 0,
                '{' | '}' => return Err(bad()),
                '/' if depth == 0 => segments.push(std::mem::take(&mut current)),
                _ => {}
            }
            if c != '/' || depth == 1 {
                current.push(c);
            }
        }
        if depth != 0 {
            return Err(bad());
        }
        segments.push(current);
        for segment in segments {
            if let Some(inner) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                let (field, pattern) = inner.split_once('=').unwrap_or((inner, "*"));
                if field.is_empty() || pattern.is_empty() {
                    return Err(bad());
                }
                tokens.push(Token::Open(field.to_owned()));
                for part in pattern.split('/') {
                    tokens.push(token(part).ok_or_else(bad)?);
                }
                tokens.push(Token::Close);
            } else {
                tokens.push(token(&segment).ok_or_else(bad)?);
            }
        }
        let literals = tokens
            .iter()
            .filter(|t| matches!(t, Token::Literal(_)))
            .count();
        Ok(Self {
            tokens,
            verb,
            literals,
        })
    }

    /// How many literal segments it has (a more literal template is tried first).
    #[must_use]
    pub fn literals(&self) -> usize {
        self.literals
    }

    /// A path it matches, with `id1`, `id2`, ... for its wildcards.
    #[must_use]
    pub fn sample(&self) -> String {
        let mut out = String::new();
        let mut n = 0;
        for t in &self.tokens {
            let part = match t {
                Token::Literal(l) => l.clone(),
                Token::One | Token::Rest => {
                    n += 1;
                    format!("id{n}")
                }
                Token::Open(_) | Token::Close => continue,
            };
            out.push('/');
            out.push_str(&part);
        }
        if let Some(v) = &self.verb {
            out.push(':');
            out.push_str(v);
        }
        out
    }

    /// The variables bound by `path` (without its query), or `None` when it does not match.
    /// Each segment is percent-decoded; a `**` value keeps its slashes.
    #[must_use]
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let rest = path.strip_prefix('/')?;
        let rest = match &self.verb {
            Some(verb) => rest.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => rest,
        };
        let segments: Vec<String> = rest.split('/').map(decode).collect::<Option<_>>()?;
        if self.verb.is_none() && segments.last().is_some_and(|s| s.contains(':')) {
            return None;
        }
        let mut bound = Vec::new();
        walk(&self.tokens, &segments, &mut Vec::new(), &mut bound).then_some(bound)
    }
}

fn token(part: &str) -> Option<Token> {
    match part {
        "" => None,
        "*" => Some(Token::One),
        "**" => Some(Token::Rest),
        p if p.contains(['*', '{', '}', '=']) => None,
        p => Some(Token::Literal(p.to_owned())),
    }
}

fn decode(segment: &str) -> Option<String> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(std::borrow::Cow::into_owned)
}

/// Matches `tokens` against `segments`; `open` holds the variables being bound: (field, the
/// segments taken so far).
fn walk(
    tokens: &[Token],
    segments: &[String],
    open: &mut Vec<(String, Vec<String>)>,
    bound: &mut Vec<(String, String)>,
) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return segments.is_empty();
    };
    match first {
        Token::Open(field) => {
            open.push((field.clone(), Vec::new()));
            if walk(rest, segments, open, bound) {
                return true;
            }
            open.pop();
            false
        }
        Token::Close => {
            let Some((field, taken)) = open.pop() else {
                return false;
            };
            let n = bound.len();
            bound.push((field.clone(), taken.join("/")));
            if walk(rest, segments, open, bound) {
                return true;
            }
            bound.truncate(n);
            open.push((field, taken));
            false
        }
        Token::Literal(l) => {
            segments.first().is_some_and(|s| s == l) && take(1, rest, segments, open, bound)
        }
        Token::One => {
            segments.first().is_some_and(|s| !s.is_empty()) && take(1, rest, segments, open, bound)
        }
        Token::Rest => (1..=segments.len()).rev().any(|n| {
            segments[..n].iter().all(|s| !s.is_empty()) && take(n, rest, segments, open, bound)
        }),
    }
}

/// Consumes `n` segments (adding them to every open variable) and goes on with `rest`.
fn take(
    n: usize,
    rest: &[Token],
    segments: &[String],
    open: &mut Vec<(String, Vec<String>)>,
    bound: &mut Vec<(String, String)>,
) -> bool {
    let (taken, left) = segments.split_at(n);
    for (_, v) in open.iter_mut() {
        v.extend(taken.iter().cloned());
    }
    if walk(rest, left, open, bound) {
        return true;
    }
    for (_, v) in open.iter_mut() {
        v.truncate(v.len() - n);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(t: &str, path: &str) -> Option<Vec<(String, String)>> {
        Template::parse(t).unwrap().matches(path)
    }

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn variables_bind_their_whole_pattern() {
        assert_eq!(
            bind(
                "/v1/{name=organizations/*/customers/*}",
                "/v1/organizations/o1/customers/c9"
            ),
            Some(vec![pair("name", "organizations/o1/customers/c9")])
        );
        assert_eq!(
            bind(
                "/v1/{parent=organizations/*}/customers",
                "/v1/organizations/o1/customers"
            ),
            Some(vec![pair("parent", "organizations/o1")])
        );
        assert_eq!(
            bind(
                "/v1/{customer.name=organizations/*/customers/*}",
                "/v1/organizations/o1/customers/c%2F9"
            ),
            Some(vec![pair(
                "customer.name",
                "organizations/o1/customers/c/9"
            )])
        );
        assert_eq!(
            bind("/v1/things/{id}", "/v1/things/7"),
            Some(vec![pair("id", "7")])
        );
        assert_eq!(
            bind("/v1/{path=files/**}", "/v1/files/a/b/c"),
            Some(vec![pair("path", "files/a/b/c")])
        );
    }

    #[test]
    fn verbs_literals_and_lengths_must_agree() {
        let undelete = "/v1/{name=organizations/*/customers/*}:undelete";
        assert_eq!(
            bind(undelete, "/v1/organizations/o1/customers/c9:undelete"),
            Some(vec![pair("name", "organizations/o1/customers/c9")])
        );
        assert_eq!(bind(undelete, "/v1/organizations/o1/customers/c9"), None);
        assert_eq!(
            bind(undelete, "/v1/organizations/o1/customers/c9:delete"),
            None
        );
        let get = "/v1/{name=organizations/*/customers/*}";
        assert_eq!(
            bind(get, "/v1/organizations/o1/customers/c9:undelete"),
            None
        );
        assert_eq!(bind(get, "/v1/organizations/o1/customers"), None);
        assert_eq!(bind(get, "/v1/organizations/o1/customers/c9/x"), None);
        assert_eq!(bind(get, "/v1/organizations/o1/contacts/c9"), None);
        assert_eq!(bind(get, "/v1/organizations//customers/c9"), None);
    }

    #[test]
    fn malformed_templates_are_refused() {
        for t in [
            "v1/x",
            "/v1/{name",
            "/v1/{a{b}}",
            "/v1/{=x}",
            "/v1//x",
            "/v1/x*y",
        ] {
            assert!(Template::parse(t).is_err(), "{t}");
        }
    }
}
