//! A small subset of AIP-160 filtering, parsed by our own parser into an AST and compiled into
//! diesel expressions over a per-resource allow-list of fields. No SQL text is ever built from
//! the filter: values are always bound parameters.
//!
//! Grammar (as in AIP-160, `OR` binds tighter than `AND`; juxtaposition means `AND`):
//!
//! ```text
//! filter     := sequence ("AND" sequence)*
//! sequence   := factor+
//! factor     := term ("OR" term)*
//! term       := ("NOT" | "-")? simple
//! simple     := "(" filter ")" | field op value
//! op         := "=" | "!=" | "<" | "<=" | ">" | ">=" | ":"
//! value      := "quoted string" | bare-word
//! ```

use diesel::expression::BoxableExpression;
use diesel::pg::Pg;
use diesel::sql_types::Bool;

/// Longest filter accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 2048;
const MAX_DEPTH: usize = 16;
const MAX_COMPARISONS: usize = 32;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `:` (has; on text fields, contains)
    Has,
}

/// A literal value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A double-quoted string (escapes resolved).
    Quoted(String),
    /// A bare word: a number, an enum name, `true`, a timestamp.
    Bare(String),
}

impl Value {
    /// The value's text.
    #[must_use]
    pub fn text(&self) -> &str {
        match self {
            Self::Quoted(s) | Self::Bare(s) => s,
        }
    }
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// All must hold.
    And(Vec<Filter>),
    /// Any must hold.
    Or(Vec<Filter>),
    /// Must not hold.
    Not(Box<Filter>),
    /// `field op value`.
    Compare {
        /// Dotted field path.
        field: String,
        /// Operator.
        op: Op,
        /// Literal.
        value: Value,
    },
}

/// Why a filter was refused (INVALID_ARGUMENT on field `filter`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FilterError {
    /// What is wrong, for a person.
    pub message: String,
}

impl FilterError {
    /// A new error with `message`.
    #[must_use]
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    LParen,
    RParen,
    Op(Op),
    Minus,
    Word(String),
    Quoted(String),
}

fn lex(input: &str) -> Result<Vec<Token>, FilterError> {
    let mut tokens = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                tokens.push(Token::LParen);
            }
            ')' => {
                chars.next();
                tokens.push(Token::RParen);
            }
            '=' => {
                chars.next();
                tokens.push(Token::Op(Op::Eq));
            }
            ':' => {
                chars.next();
                tokens.push(Token::Op(Op::Has));
            }
            '!' => {
                chars.next();
                if chars.next_if(|&(_, c)| c == '=').is_some() {
                    tokens.push(Token::Op(Op::Ne));
                } else {
                    return Err(FilterError::new(format!("unexpected '!' at offset {i}")));
                }
            }
            '<' | '>' => {
                chars.next();
                let eq = chars.next_if(|&(_, c)| c == '=').is_some();
                tokens.push(Token::Op(match (c, eq) {
                    ('<', false) => Op::Lt,
                    ('<', true) => Op::Le,
                    (_, false) => Op::Gt,
                    (_, true) => Op::Ge,
                }));
            }
            '-' if tokens.last().is_none_or(|t| {
                matches!(
                    t,
                    Token::LParen | Token::Word(_) | Token::RParen | Token::Quoted(_)
                )
            }) =>
            {
                chars.next();
                tokens.push(Token::Minus);
            }
            '"' | '\'' => {
                chars.next();
                let quote = c;
                let mut s = String::new();
                let mut closed = false;
                while let Some((_, ch)) = chars.next() {
                    match ch {
                        '\\' => match chars.next() {
                            Some((_, esc)) => s.push(esc),
                            None => break,
                        },
                        ch if ch == quote => {
                            closed = true;
                            break;
                        }
                        ch => s.push(ch),
                    }
                }
                if !closed {
                    return Err(FilterError::new(format!(
                        "unterminated string at offset {i}"
                    )));
                }
                tokens.push(Token::Quoted(s));
            }
            _ => {
                let mut word = String::new();
                while let Some(&(_, ch)) = chars.peek() {
                    if ch.is_whitespace() || "()=!<>:\"'".contains(ch) {
                        break;
                    }
                    word.push(ch);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
    comparisons: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn is_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w == kw)
    }

    fn filter(&mut self) -> Result<Filter, FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(FilterError::new("filter is nested too deeply"));
        }
        let mut parts = vec![self.sequence()?];
        while self.is_keyword("AND") {
            self.next();
            parts.push(self.sequence()?);
        }
        self.depth -= 1;
        Ok(flatten(parts, Filter::And))
    }

    fn sequence(&mut self) -> Result<Filter, FilterError> {
        let mut parts = vec![self.factor()?];
        while let Some(t) = self.peek() {
            match t {
                Token::RParen => break,
                Token::Word(w) if w == "AND" || w == "OR" => break,
                Token::LParen | Token::Op(_) | Token::Minus | Token::Word(_) | Token::Quoted(_) => {
                    parts.push(self.factor()?);
                }
            }
        }
        Ok(flatten(parts, Filter::And))
    }

    fn factor(&mut self) -> Result<Filter, FilterError> {
        let mut parts = vec![self.term()?];
        while self.is_keyword("OR") {
            self.next();
            parts.push(self.term()?);
        }
        Ok(flatten(parts, Filter::Or))
    }

    fn term(&mut self) -> Result<Filter, FilterError> {
        if self.is_keyword("NOT") || self.peek() == Some(&Token::Minus) {
            self.next();
            return Ok(Filter::Not(Box::new(self.simple()?)));
        }
        self.simple()
    }

    fn simple(&mut self) -> Result<Filter, FilterError> {
        match self.next() {
            Some(Token::LParen) => {
                let inner = self.filter()?;
                match self.next() {
                    Some(Token::RParen) => Ok(inner),
                    _ => Err(FilterError::new("missing ')'")),
                }
            }
            Some(Token::Word(field)) => {
                if field == "AND" || field == "OR" || field == "NOT" {
                    return Err(FilterError::new(format!("unexpected {field}")));
                }
                if !field.split('.').all(|p| {
                    !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                }) {
                    return Err(FilterError::new(format!("'{field}' is not a field name")));
                }
                let Some(Token::Op(op)) = self.next() else {
                    return Err(FilterError::new(format!(
                        "expected a comparison operator after '{field}'"
                    )));
                };
                let value = match self.next() {
                    Some(Token::Quoted(s)) => Value::Quoted(s),
                    Some(Token::Word(w)) => Value::Bare(w),
                    Some(Token::Minus) => match self.next() {
                        Some(Token::Word(w)) => Value::Bare(format!("-{w}")),
                        _ => {
                            return Err(FilterError::new(format!(
                                "expected a value for '{field}'"
                            )));
                        }
                    },
                    _ => return Err(FilterError::new(format!("expected a value for '{field}'"))),
                };
                self.comparisons += 1;
                if self.comparisons > MAX_COMPARISONS {
                    return Err(FilterError::new("filter has too many comparisons"));
                }
                Ok(Filter::Compare { field, op, value })
            }
            Some(other) => Err(FilterError::new(format!("unexpected {other:?}"))),
            None => Err(FilterError::new("filter ends unexpectedly")),
        }
    }
}

fn flatten(mut parts: Vec<Filter>, make: fn(Vec<Filter>) -> Filter) -> Filter {
    if parts.len() == 1 {
        parts.remove(0)
    } else {
        make(parts)
    }
}

/// Parses a filter; the empty (or blank) filter is `None`.
///
/// # Errors
/// A [`FilterError`] saying what is wrong.
pub fn parse(input: &str) -> Result<Option<Filter>, FilterError> {
    if input.len() > MAX_FILTER_LEN {
        return Err(FilterError::new(format!(
            "filter is longer than {MAX_FILTER_LEN} bytes"
        )));
    }
    if input.contains('\0') {
        // PostgreSQL text cannot hold NUL: refused here rather than failing in the database.
        return Err(FilterError::new("filter must not contain NUL characters"));
    }
    if input.trim().is_empty() {
        return Ok(None);
    }
    let mut parser = Parser {
        tokens: lex(input)?,
        pos: 0,
        depth: 0,
        comparisons: 0,
    };
    let filter = parser.filter()?;
    if parser.pos < parser.tokens.len() {
        return Err(FilterError::new("unexpected text after the filter"));
    }
    Ok(Some(filter))
}

/// A boolean diesel expression over the query source `QS` for one comparison.
pub type BoxedPredicate<QS> = Box<dyn BoxableExpression<QS, Pg, SqlType = Bool> + Send>;

/// A compiled filter: comparisons joined by AND, OR and NOT. It is its own diesel expression
/// (rather than nested `.and()` boxes) because boxed queries need `Send` predicates, and
/// diesel's operators do not compose `Send` trait objects.
pub enum Predicate<QS> {
    /// One comparison.
    Leaf(BoxedPredicate<QS>),
    /// All hold.
    And(Vec<Predicate<QS>>),
    /// Any holds.
    Or(Vec<Predicate<QS>>),
    /// Does not hold.
    Not(Box<Predicate<QS>>),
}

impl<QS> std::fmt::Debug for Predicate<QS> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Leaf(_) => f.write_str("Leaf"),
            Self::And(v) => f.debug_tuple("And").field(v).finish(),
            Self::Or(v) => f.debug_tuple("Or").field(v).finish(),
            Self::Not(p) => f.debug_tuple("Not").field(p).finish(),
        }
    }
}

impl<QS> diesel::expression::Expression for Predicate<QS> {
    type SqlType = Bool;
}

impl<QS> diesel::query_builder::QueryFragment<Pg> for Predicate<QS> {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, Pg>,
    ) -> diesel::QueryResult<()> {
        match self {
            Self::Leaf(e) => {
                out.push_sql("(");
                e.walk_ast(out.reborrow())?;
                out.push_sql(")");
            }
            Self::And(parts) | Self::Or(parts) => {
                let joiner = if matches!(self, Self::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                out.push_sql("(");
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        out.push_sql(joiner);
                    }
                    p.walk_ast(out.reborrow())?;
                }
                out.push_sql(")");
            }
            Self::Not(p) => {
                out.push_sql("(NOT ");
                p.walk_ast(out.reborrow())?;
                out.push_sql(")");
            }
        }
        Ok(())
    }
}

impl<QS> diesel::query_builder::QueryId for Predicate<QS> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<QS> diesel::expression::AppearsOnTable<QS> for Predicate<QS> {}

impl<QS> diesel::expression::SelectableExpression<QS> for Predicate<QS> {}

impl<QS> diesel::expression::ValidGrouping<()> for Predicate<QS> {
    type IsAggregate = diesel::expression::is_aggregate::Never;
}

/// Compiles a filter into a diesel predicate, asking `leaf` for each comparison; `leaf` rejects
/// fields outside its allow-list.
///
/// # Errors
/// The first [`FilterError`] from `leaf`.
pub fn compile<QS, F>(filter: &Filter, leaf: &F) -> Result<Predicate<QS>, FilterError>
where
    F: Fn(&str, Op, &Value) -> Result<BoxedPredicate<QS>, FilterError>,
{
    Ok(match filter {
        Filter::Compare { field, op, value } => Predicate::Leaf(leaf(field, *op, value)?),
        Filter::Not(inner) => Predicate::Not(Box::new(compile(inner, leaf)?)),
        Filter::And(parts) => Predicate::And(
            parts
                .iter()
                .map(|p| compile(p, leaf))
                .collect::<Result<_, _>>()?,
        ),
        Filter::Or(parts) => Predicate::Or(
            parts
                .iter()
                .map(|p| compile(p, leaf))
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// Turns an AIP-160 string value with `*` wildcards into a LIKE pattern (other LIKE
/// metacharacters escaped); `None` when it has no wildcard.
#[must_use]
pub fn like_pattern(value: &str) -> Option<String> {
    if !value.contains('*') {
        return None;
    }
    let mut out = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '*' => out.push('%'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    Some(out)
}

/// Error for a field outside the allow-list.
#[must_use]
pub fn unknown_field(field: &str, allowed: &[&str]) -> FilterError {
    FilterError::new(format!(
        "cannot filter on '{field}'; allowed fields: {}",
        allowed.join(", ")
    ))
}

/// Error for an operator a field does not support.
#[must_use]
pub fn unsupported_op(field: &str, op: Op) -> FilterError {
    FilterError::new(format!("operator {op:?} is not supported on '{field}'"))
}

/// The number of a protobuf enum value named in a filter, by its full name
/// (`TICKET_STATUS_OPEN`) or by the part after `prefix` in any case (`open`).
///
/// # Errors
/// A filter error naming the value when it is neither.
pub fn enum_number<E: Into<i32>>(
    value: &Value,
    prefix: &str,
    from_name: fn(&str) -> Option<E>,
) -> Result<i16, FilterError> {
    let text = value.text();
    from_name(text)
        .or_else(|| from_name(&format!("{prefix}{}", text.to_ascii_uppercase())))
        .and_then(|e| i16::try_from(e.into()).ok())
        .ok_or_else(|| FilterError::new(format!("{text:?} is not a {prefix}* value")))
}

/// Compiles a comparison on a text column (`Text`, or `Nullable<Text>` after
/// `.assume_not_null()`): `=` with `*` wildcards is a LIKE, `:` is a case-insensitive contains.
#[macro_export]
macro_rules! filter_text {
    ($column:expr, $field:expr, $op:expr, $value:expr) => {{
        use diesel::{
            ExpressionMethods as _, PgTextExpressionMethods as _, TextExpressionMethods as _,
        };
        use $crate::filter::{BoxedPredicate, Op, like_pattern, unsupported_op};
        let text: String = $value.text().to_owned();
        let out: Result<BoxedPredicate<_>, $crate::filter::FilterError> = match $op {
            Op::Eq => Ok(match like_pattern(&text) {
                Some(p) => Box::new($column.like(p)),
                None => Box::new($column.eq(text)),
            }),
            Op::Ne => Ok(match like_pattern(&text) {
                Some(p) => Box::new($column.not_like(p)),
                None => Box::new($column.ne(text)),
            }),
            Op::Lt => Ok(Box::new($column.lt(text))),
            Op::Le => Ok(Box::new($column.le(text))),
            Op::Gt => Ok(Box::new($column.gt(text))),
            Op::Ge => Ok(Box::new($column.ge(text))),
            Op::Has => {
                let escaped =
                    like_pattern(&format!("*{}*", text.replace('*', ""))).unwrap_or_default();
                Ok(Box::new($column.ilike(escaped)))
            }
        };
        let _: &str = $field;
        out
    }};
}

/// Compiles a comparison on a `Timestamptz` column; the value is RFC 3339.
#[macro_export]
macro_rules! filter_time {
    ($column:expr, $field:expr, $op:expr, $value:expr) => {{
        use diesel::ExpressionMethods as _;
        use $crate::filter::{BoxedPredicate, FilterError, Op, unsupported_op};
        match chrono::DateTime::parse_from_rfc3339($value.text()) {
            Err(_) => Err(FilterError::new(format!(
                "'{}' needs an RFC 3339 timestamp such as 2026-01-31T00:00:00Z",
                $field
            ))),
            Ok(t) => {
                let t = t.with_timezone(&chrono::Utc);
                let out: Result<BoxedPredicate<_>, FilterError> = match $op {
                    Op::Eq => Ok(Box::new($column.eq(t))),
                    Op::Ne => Ok(Box::new($column.ne(t))),
                    Op::Lt => Ok(Box::new($column.lt(t))),
                    Op::Le => Ok(Box::new($column.le(t))),
                    Op::Gt => Ok(Box::new($column.gt(t))),
                    Op::Ge => Ok(Box::new($column.ge(t))),
                    Op::Has => Err(unsupported_op($field, $op)),
                };
                out
            }
        }
    }};
}

/// Compiles an equality comparison on a `SmallInt` enum column, given the value already mapped
/// to its number.
#[macro_export]
macro_rules! filter_enum {
    ($column:expr, $field:expr, $op:expr, $number:expr) => {{
        use diesel::ExpressionMethods as _;
        use $crate::filter::{BoxedPredicate, FilterError, Op, unsupported_op};
        let n: i16 = $number;
        let out: Result<BoxedPredicate<_>, FilterError> = match $op {
            Op::Eq => Ok(Box::new($column.eq(n))),
            Op::Ne => Ok(Box::new($column.ne(n))),
            Op::Lt | Op::Le | Op::Gt | Op::Ge | Op::Has => Err(unsupported_op($field, $op)),
        };
        out
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(field: &str, op: Op, v: &str) -> Filter {
        Filter::Compare {
            field: field.to_owned(),
            op,
            value: Value::Bare(v.to_owned()),
        }
    }

    #[test]
    fn a_nul_character_is_refused_before_any_sql() {
        for f in [
            "display_name = \"a\u{0}b\"",
            "display_name = a\u{0}b",
            "\u{0}",
        ] {
            let e = parse(f).unwrap_err();
            assert!(e.message.contains("NUL"), "{f:?}: {e}");
        }
    }

    #[test]
    fn or_binds_tighter_than_and() {
        let f = parse("a = 1 AND b = 2 OR c = 3").unwrap().unwrap();
        assert_eq!(
            f,
            Filter::And(vec![
                cmp("a", Op::Eq, "1"),
                Filter::Or(vec![cmp("b", Op::Eq, "2"), cmp("c", Op::Eq, "3")])
            ])
        );
    }

    #[test]
    fn juxtaposition_not_and_parentheses() {
        let f = parse("NOT (a >= 1) b != \"x y\"").unwrap().unwrap();
        assert_eq!(
            f,
            Filter::And(vec![
                Filter::Not(Box::new(cmp("a", Op::Ge, "1"))),
                Filter::Compare {
                    field: "b".into(),
                    op: Op::Ne,
                    value: Value::Quoted("x y".into())
                }
            ])
        );
        assert_eq!(
            parse("-a:x").unwrap().unwrap(),
            Filter::Not(Box::new(cmp("a", Op::Has, "x")))
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "a =", "(a = 1", "a = 1)", "= 1", "a ! 1", "\"open", "AND", "a.b- = 1", "a = 1 OR",
        ] {
            assert!(parse(bad).is_err(), "{bad} should be refused");
        }
        assert!(parse("a = 1 AND ".repeat(40).trim_end_matches(" AND ")).is_err());
        assert!(parse(&"(".repeat(40)).is_err());
        assert_eq!(parse("   "), Ok(None));
    }

    #[test]
    fn like_escaping() {
        assert_eq!(like_pattern("Acme*"), Some("Acme%".to_owned()));
        assert_eq!(like_pattern("50%_*"), Some("50\\%\\_%".to_owned()));
        assert_eq!(like_pattern("plain"), None);
    }
}
