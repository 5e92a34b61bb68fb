//! The SOQL the Salesforce simulator answers, parsed and evaluated as Salesforce does:
//! `SELECT f, … FROM Obj [WHERE cond] [ORDER BY f [ASC|DESC], …] [LIMIT n]`, where `cond` joins
//! comparisons (`= != <> < <= > >=`), `[NOT] IN (…)` and `LIKE` with `AND`, `OR` and `NOT` and
//! parentheses. Refused like Salesforce refuses: `AND` and `OR` mixed without parentheses, a
//! value of the wrong type for its field (text for a checkbox, `LIKE` on a non-text field), and
//! statements over 100,000 characters. Text compares without case; `= null` also matches an
//! empty text field. Pure: the caller supplies field values and kinds.

use std::cmp::Ordering;

use serde_json::Value;

use crate::connector::salesforce::api::parse_datetime;

/// The longest SOQL statement Salesforce accepts (characters).
pub const MAX_LENGTH: usize = 100_000;

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub cols: Vec<String>,
    pub object: String,
    pub filter: Option<Expr>,
    /// (field, ascending)
    pub order: Vec<(String, bool)>,
    pub limit: Option<usize>,
}

/// A `WHERE` condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Cmp {
        field: String,
        op: Op,
        value: Lit,
    },
    In {
        field: String,
        negated: bool,
        values: Vec<Lit>,
    },
    Like {
        field: String,
        pattern: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A literal value in a condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
    /// Epoch ms.
    DateTime(i64),
    /// `YYYY-MM-DD`.
    Date(String),
}

/// What a field holds, for type checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Bool,
    Number,
    DateTime,
    Date,
}

/// Why a query is refused, as Salesforce's error codes say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SoqlError {
    /// `MALFORMED_QUERY`
    Malformed(String),
    /// `INVALID_FIELD`
    InvalidField(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Sym(&'static str),
}

fn malformed<T>(m: impl Into<String>) -> Result<T, SoqlError> {
    Err(SoqlError::Malformed(m.into()))
}

fn tokens(q: &str) -> Result<Vec<Tok>, SoqlError> {
    let mut out = Vec::new();
    let mut chars = q.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '\'' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return malformed("unterminated string literal"),
                        Some('\\') => match chars.next() {
                            Some('n') => s.push('\n'),
                            Some('r') => s.push('\r'),
                            Some('t') => s.push('\t'),
                            // `\%` and `\_` stay escaped: they matter to LIKE only.
                            Some(e @ ('%' | '_')) => {
                                s.push('\\');
                                s.push(e);
                            }
                            Some(e) => s.push(e),
                            None => return malformed("unterminated string literal"),
                        },
                        Some('\'') => break,
                        Some(c) => s.push(c),
                    }
                }
                out.push(Tok::Str(s));
            }
            '(' | ')' | ',' => {
                chars.next();
                out.push(Tok::Sym(match c {
                    '(' => "(",
                    ')' => ")",
                    _ => ",",
                }));
            }
            '=' | '!' | '<' | '>' => {
                chars.next();
                let next = chars.peek().copied();
                let sym = match (c, next) {
                    ('!', Some('=')) => "!=",
                    ('<', Some('>')) => "<>",
                    ('<', Some('=')) => "<=",
                    ('>', Some('=')) => ">=",
                    ('=', _) => "=",
                    ('<', _) => "<",
                    ('>', _) => ">",
                    _ => return malformed("unexpected token: '!'"),
                };
                if sym.len() == 2 {
                    chars.next();
                }
                out.push(Tok::Sym(sym));
            }
            c if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '+' | '-') => {
                let mut w = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '+' | '-') {
                        w.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(Tok::Word(w));
            }
            c => return malformed(format!("unexpected token: '{c}'")),
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(k))
    }

    fn eat_keyword(&mut self, k: &str) -> bool {
        let hit = self.keyword(k);
        if hit {
            self.at += 1;
        }
        hit
    }

    fn expect_keyword(&mut self, k: &str) -> Result<(), SoqlError> {
        if self.eat_keyword(k) {
            Ok(())
        } else {
            malformed(format!("unexpected token: expected {k}"))
        }
    }

    fn eat_sym(&mut self, s: &str) -> bool {
        let hit = matches!(self.peek(), Some(Tok::Sym(x)) if *x == s);
        if hit {
            self.at += 1;
        }
        hit
    }

    fn ident(&mut self) -> Result<String, SoqlError> {
        match self.next() {
            Some(Tok::Word(w))
                if w.starts_with(|c: char| c.is_ascii_alphabetic())
                    && w.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') =>
            {
                Ok(w)
            }
            Some(t) => malformed(format!("unexpected token: {t:?}")),
            None => malformed("unexpected end of query"),
        }
    }

    /// `a AND b AND c` or `a OR b OR c`; mixing the two needs parentheses.
    fn expr(&mut self) -> Result<Expr, SoqlError> {
        let first = self.term()?;
        let mut joined = None::<(bool, Vec<Expr>)>;
        loop {
            let and = if self.eat_keyword("AND") {
                true
            } else if self.eat_keyword("OR") {
                false
            } else {
                break;
            };
            let next = self.term()?;
            match &mut joined {
                None => joined = Some((and, vec![first.clone(), next])),
                Some((was, list)) if *was == and => list.push(next),
                Some(_) => {
                    return malformed(format!(
                        "unexpected token: '{}': use parentheses to mix AND and OR",
                        if and { "AND" } else { "OR" }
                    ));
                }
            }
        }
        Ok(match joined {
            None => first,
            Some((true, list)) => Expr::And(list),
            Some((false, list)) => Expr::Or(list),
        })
    }

    fn term(&mut self) -> Result<Expr, SoqlError> {
        if self.eat_keyword("NOT") {
            return Ok(Expr::Not(Box::new(self.term()?)));
        }
        if self.eat_sym("(") {
            let e = self.expr()?;
            if !self.eat_sym(")") {
                return malformed("unexpected token: expected ')'");
            }
            return Ok(e);
        }
        let field = self.ident()?;
        if self.eat_keyword("LIKE") {
            return match self.next() {
                Some(Tok::Str(pattern)) => Ok(Expr::Like { field, pattern }),
                _ => malformed("LIKE takes a string literal"),
            };
        }
        let negated = self.eat_keyword("NOT");
        if self.eat_keyword("IN") {
            if !self.eat_sym("(") {
                return malformed("unexpected token: expected '(' after IN");
            }
            let mut values = vec![self.literal()?];
            while self.eat_sym(",") {
                values.push(self.literal()?);
            }
            if !self.eat_sym(")") {
                return malformed("unexpected token: expected ')' after the IN list");
            }
            return Ok(Expr::In {
                field,
                negated,
                values,
            });
        }
        if negated {
            return malformed("unexpected token: NOT");
        }
        let op = match self.next() {
            Some(Tok::Sym("=")) => Op::Eq,
            Some(Tok::Sym("!=" | "<>")) => Op::Ne,
            Some(Tok::Sym("<")) => Op::Lt,
            Some(Tok::Sym("<=")) => Op::Le,
            Some(Tok::Sym(">")) => Op::Gt,
            Some(Tok::Sym(">=")) => Op::Ge,
            t => return malformed(format!("unexpected token after {field}: {t:?}")),
        };
        let value = self.literal()?;
        Ok(Expr::Cmp { field, op, value })
    }

    fn literal(&mut self) -> Result<Lit, SoqlError> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Lit::Str(s)),
            Some(Tok::Word(w)) => {
                if w.eq_ignore_ascii_case("null") {
                    Ok(Lit::Null)
                } else if w.eq_ignore_ascii_case("true") {
                    Ok(Lit::Bool(true))
                } else if w.eq_ignore_ascii_case("false") {
                    Ok(Lit::Bool(false))
                } else if let Some(ms) = w.contains('T').then(|| parse_datetime(&w)).flatten() {
                    Ok(Lit::DateTime(ms))
                } else if w.parse::<jiff::civil::Date>().is_ok() {
                    Ok(Lit::Date(w))
                } else if let Ok(n) = w.parse::<f64>() {
                    Ok(Lit::Num(n))
                } else {
                    malformed(format!("unexpected token: {w}"))
                }
            }
            t => malformed(format!("unexpected token: expected a value, got {t:?}")),
        }
    }
}

/// Parses a SOQL statement.
pub fn parse(q: &str) -> Result<Query, SoqlError> {
    if q.chars().count() > MAX_LENGTH {
        return malformed(format!(
            "SOQL statements cannot be longer than {MAX_LENGTH} characters"
        ));
    }
    let mut p = Parser {
        toks: tokens(q)?,
        at: 0,
    };
    p.expect_keyword("SELECT")?;
    let mut cols = vec![p.ident()?];
    while p.eat_sym(",") {
        cols.push(p.ident()?);
    }
    p.expect_keyword("FROM")?;
    let object = p.ident()?;
    let filter = if p.eat_keyword("WHERE") {
        Some(p.expr()?)
    } else {
        None
    };
    let mut order = Vec::new();
    if p.eat_keyword("ORDER") {
        p.expect_keyword("BY")?;
        loop {
            let f = p.ident()?;
            let asc = !p.eat_keyword("DESC");
            if asc {
                p.eat_keyword("ASC");
            }
            if p.eat_keyword("NULLS") && !(p.eat_keyword("FIRST") || p.eat_keyword("LAST")) {
                return malformed("unexpected token: expected FIRST or LAST");
            }
            order.push((f, asc));
            if !p.eat_sym(",") {
                break;
            }
        }
    }
    let limit = if p.eat_keyword("LIMIT") {
        match p.next() {
            Some(Tok::Word(w)) => match w.parse::<usize>() {
                Ok(n) => Some(n),
                Err(_) => return malformed(format!("unexpected token: {w}")),
            },
            _ => return malformed("LIMIT takes a number"),
        }
    } else {
        None
    };
    if let Some(t) = p.peek() {
        return malformed(format!("unexpected token: {t:?}"));
    }
    Ok(Query {
        cols,
        object,
        filter,
        order,
        limit,
    })
}

impl Expr {
    /// Every field the condition names.
    pub fn fields(&self) -> Vec<&str> {
        match self {
            Expr::And(l) | Expr::Or(l) => l.iter().flat_map(Expr::fields).collect(),
            Expr::Not(e) => e.fields(),
            Expr::Cmp { field, .. } | Expr::In { field, .. } | Expr::Like { field, .. } => {
                vec![field.as_str()]
            }
        }
    }

    /// Refuses values of the wrong type for their field, as Salesforce does before running.
    pub fn check(&self, kind: &dyn Fn(&str) -> Kind) -> Result<(), SoqlError> {
        let fits = |field: &str, v: &Lit| {
            let k = kind(field);
            let ok = matches!(
                (k, v),
                (_, Lit::Null)
                    | (Kind::Text, Lit::Str(_))
                    | (Kind::Bool, Lit::Bool(_))
                    | (Kind::Number, Lit::Num(_))
                    | (Kind::DateTime, Lit::DateTime(_))
                    | (Kind::Date, Lit::Date(_))
            );
            if ok {
                Ok(())
            } else {
                Err(SoqlError::InvalidField(format!(
                    "value of incorrect type for {field}: {v:?}"
                )))
            }
        };
        match self {
            Expr::And(l) | Expr::Or(l) => l.iter().try_for_each(|e| e.check(kind)),
            Expr::Not(e) => e.check(kind),
            Expr::Cmp { field, op, value } => {
                if kind(field) == Kind::Bool && !matches!(op, Op::Eq | Op::Ne) {
                    return Err(SoqlError::InvalidField(format!(
                        "invalid operator on boolean field {field}"
                    )));
                }
                fits(field, value)
            }
            Expr::In { field, values, .. } => values.iter().try_for_each(|v| fits(field, v)),
            Expr::Like { field, .. } => match kind(field) {
                Kind::Text => Ok(()),
                _ => Err(SoqlError::InvalidField(format!(
                    "invalid operator on field {field}: LIKE is for text fields"
                ))),
            },
        }
    }

    /// Whether a row whose field values `get` gives satisfies the condition.
    pub fn matches(&self, get: &dyn Fn(&str) -> Value) -> bool {
        match self {
            Expr::And(l) => l.iter().all(|e| e.matches(get)),
            Expr::Or(l) => l.iter().any(|e| e.matches(get)),
            Expr::Not(e) => !e.matches(get),
            Expr::Cmp { field, op, value } => {
                let v = get(field);
                match (op, compare(&v, value)) {
                    (Op::Eq, c) => c == Some(Ordering::Equal),
                    (Op::Ne, c) => c != Some(Ordering::Equal),
                    (Op::Lt, Some(c)) => c == Ordering::Less,
                    (Op::Le, Some(c)) => c != Ordering::Greater,
                    (Op::Gt, Some(c)) => c == Ordering::Greater,
                    (Op::Ge, Some(c)) => c != Ordering::Less,
                    (_, None) => false,
                }
            }
            Expr::In {
                field,
                negated,
                values,
            } => {
                let v = get(field);
                let hit = values
                    .iter()
                    .any(|l| compare(&v, l) == Some(Ordering::Equal));
                hit != *negated
            }
            Expr::Like { field, pattern } => text_of(&get(field))
                .is_some_and(|t| like(&t.to_lowercase(), &pattern.to_lowercase())),
        }
    }

    /// `field IN (text, …)` at the top of the condition (alone or in its `AND`), for an index.
    pub fn indexed_in(&self) -> Option<(&str, Vec<&str>)> {
        fn as_in(e: &Expr) -> Option<(&str, Vec<&str>)> {
            match e {
                Expr::In {
                    field,
                    negated: false,
                    values,
                } => values
                    .iter()
                    .map(|v| match v {
                        Lit::Str(s) => Some(s.as_str()),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()
                    .map(|v| (field.as_str(), v)),
                _ => None,
            }
        }
        match self {
            Expr::And(l) => l.iter().find_map(as_in),
            e => as_in(e),
        }
    }

    /// `SystemModstamp >= t` (or `>`) at the top of the condition: (inclusive, t).
    pub fn since(&self) -> Option<(bool, i64)> {
        let as_since = |e: &Expr| match e {
            Expr::Cmp {
                field,
                op: op @ (Op::Ge | Op::Gt),
                value: Lit::DateTime(t),
            } if field == "SystemModstamp" => Some((*op == Op::Ge, *t)),
            _ => None,
        };
        match self {
            Expr::And(l) => l.iter().find_map(as_since),
            e => as_since(e),
        }
    }
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// How a stored value compares with a literal (`None`: not comparable, e.g. a null value with
/// anything but `null`).
fn compare(v: &Value, lit: &Lit) -> Option<Ordering> {
    let empty = matches!(v, Value::Null) || v.as_str() == Some("");
    match lit {
        Lit::Null => Some(if empty {
            Ordering::Equal
        } else {
            Ordering::Greater
        }),
        _ if empty => None,
        Lit::Str(s) => {
            let t = text_of(v)?;
            Some(t.to_lowercase().cmp(&s.to_lowercase()))
        }
        Lit::Bool(b) => {
            let have = match v {
                Value::Bool(x) => *x,
                Value::String(s) => s.eq_ignore_ascii_case("true"),
                _ => return None,
            };
            Some(have.cmp(b))
        }
        Lit::Num(n) => {
            let have = match v {
                Value::Number(x) => x.as_f64()?,
                Value::String(s) => s.parse::<f64>().ok()?,
                _ => return None,
            };
            have.partial_cmp(n)
        }
        Lit::DateTime(t) => Some(parse_datetime(v.as_str()?)?.cmp(t)),
        Lit::Date(d) => Some(v.as_str()?.get(..10)?.cmp(d.as_str())),
    }
}

/// SOQL `LIKE`: `%` any run, `_` one character, `\%` `\_` `\\` literal.
fn like(text: &str, pattern: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum P {
        Any,
        One,
        Lit(char),
    }
    let mut pat = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        pat.push(match c {
            '%' => P::Any,
            '_' => P::One,
            '\\' => P::Lit(chars.next().unwrap_or('\\')),
            c => P::Lit(c),
        });
    }
    let text: Vec<char> = text.chars().collect();
    // reachable[j]: the pattern's first j parts can match the text read so far.
    let mut reachable = vec![false; pat.len() + 1];
    reachable[0] = true;
    for j in 0..pat.len() {
        if pat[j] == P::Any && reachable[j] {
            reachable[j + 1] = true;
        }
    }
    for c in text {
        let mut next = vec![false; pat.len() + 1];
        for j in 0..pat.len() {
            if !reachable[j] {
                continue;
            }
            match pat[j] {
                P::Any => {
                    next[j] = true;
                    next[j + 1] = true;
                }
                P::One => next[j + 1] = true,
                P::Lit(l) if l == c => next[j + 1] = true,
                P::Lit(_) => {}
            }
        }
        for j in 0..pat.len() {
            if pat[j] == P::Any && next[j] {
                next[j + 1] = true;
            }
        }
        reachable = next;
    }
    reachable[pat.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(pairs: &[(&str, Value)]) -> impl Fn(&str) -> Value + use<> {
        let m: serde_json::Map<String, Value> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        move |f: &str| m.get(f).cloned().unwrap_or(Value::Null)
    }

    fn kinds(f: &str) -> Kind {
        match f {
            "IsClosed" => Kind::Bool,
            "Amount" => Kind::Number,
            "SystemModstamp" => Kind::DateTime,
            "CloseDate" => Kind::Date,
            _ => Kind::Text,
        }
    }

    #[test]
    fn parses_and_evaluates_the_facts_queries() {
        let q = parse("SELECT Id, Website FROM Account WHERE Website LIKE '%acme.example%' OR Website LIKE '%o\\_b.example%' ORDER BY Id ASC").unwrap();
        assert_eq!(q.object, "Account");
        assert_eq!(q.order, vec![("Id".to_owned(), true)]);
        let f = q.filter.unwrap();
        f.check(&kinds).unwrap();
        assert!(f.matches(&row(&[("Website", json!("https://www.ACME.example/x"))])));
        assert!(f.matches(&row(&[("Website", json!("o_b.example"))])));
        assert!(
            !f.matches(&row(&[("Website", json!("oxb.example"))])),
            "\\_ is a literal _"
        );
        assert!(!f.matches(&row(&[])));

        let q = parse("select Id from Opportunity where AccountId IN ('001a', '001B') and IsClosed = false and PRM_Deal_Id__c = null").unwrap();
        let f = q.filter.unwrap();
        f.check(&kinds).unwrap();
        assert_eq!(f.indexed_in(), Some(("AccountId", vec!["001a", "001B"])));
        let open = row(&[("AccountId", json!("001A")), ("IsClosed", json!(false))]);
        assert!(f.matches(&open), "IN ignores case, a missing field is null");
        let blank = row(&[
            ("AccountId", json!("001b")),
            ("IsClosed", json!(false)),
            ("PRM_Deal_Id__c", json!("")),
        ]);
        assert!(f.matches(&blank), "an empty text field is null");
        let sourced = row(&[
            ("AccountId", json!("001a")),
            ("IsClosed", json!(false)),
            ("PRM_Deal_Id__c", json!("reg_1")),
        ]);
        assert!(!f.matches(&sourced));
        let closed = row(&[("AccountId", json!("001a")), ("IsClosed", json!(true))]);
        assert!(!f.matches(&closed));
    }

    #[test]
    fn refuses_what_salesforce_refuses() {
        let malformed = |q: &str| matches!(parse(q), Err(SoqlError::Malformed(_)));
        assert!(malformed(
            "SELECT Id FROM Account WHERE A = 'x' AND B = 'y' OR C = 'z'"
        ));
        assert!(malformed("SELECT * FROM Account"));
        assert!(malformed("SELECT Id FROM Account WHERE Name = 'x"));
        assert!(malformed("SELECT Id FROM Account LIMIT x"));
        assert!(malformed(&format!(
            "SELECT Id FROM Account WHERE Name IN ({})",
            vec!["'abcdefghij'"; 10_000].join(",")
        )));
        // Parentheses make the mix legal.
        assert!(parse("SELECT Id FROM Account WHERE (A = 'x' AND B = 'y') OR C = 'z'").is_ok());
        let invalid = |q: &str| {
            matches!(
                parse(q).unwrap().filter.unwrap().check(&kinds),
                Err(SoqlError::InvalidField(_))
            )
        };
        assert!(invalid(
            "SELECT Id FROM Opportunity WHERE IsClosed = 'false'"
        ));
        assert!(invalid("SELECT Id FROM Opportunity WHERE IsClosed > false"));
        assert!(invalid("SELECT Id FROM Opportunity WHERE Amount LIKE '1%'"));
        assert!(invalid(
            "SELECT Id FROM Opportunity WHERE SystemModstamp >= '2026-01-01'"
        ));
        assert!(!invalid(
            "SELECT Id FROM Opportunity WHERE SystemModstamp >= 2026-01-01T00:00:00Z AND CloseDate < 2026-02-01 AND Amount > 10"
        ));
    }

    #[test]
    fn like_patterns() {
        assert!(like("acme.example", "%acme%"));
        assert!(like("acme", "a_me"));
        assert!(!like("acme", "a_e"));
        assert!(like("", "%"));
        assert!(like("100%", "100\\%"));
        assert!(!like("1000", "100\\%"));
    }
}
