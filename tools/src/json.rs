//! A minimal JSON writer (machine output of `vdlimit --json`): values are
//! built as a tree and printed compactly, strings escaped per RFC 8259.

use std::fmt;

/// A JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Json {
    /// `null`.
    Null,
    /// An unsigned integer.
    Num(u64),
    /// A signed integer.
    Int(i64),
    /// A string (escaped on output).
    Str(String),
    /// An array.
    Arr(Vec<Json>),
    /// An object; keys keep their order.
    Obj(Vec<(&'static str, Json)>),
}

impl Json {
    /// A number, or `null` for `None`.
    pub fn opt(v: Option<u64>) -> Json {
        v.map_or(Json::Null, Json::Num)
    }

    /// A string, or `null` for `None`.
    pub fn opt_str(v: Option<String>) -> Json {
        v.map_or(Json::Null, Json::Str)
    }
}

/// Writes `s` as a JSON string literal.
fn write_str(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            '\u{8}' => f.write_str("\\b")?,
            '\u{c}' => f.write_str("\\f")?,
            // Other controls, and the two line separators JavaScript
            // mishandles inside string literals.
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                write!(f, "\\u{:04x}", c as u32)?
            }
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Num(n) => write!(f, "{n}"),
            Json::Int(n) => write!(f, "{n}"),
            Json::Str(s) => write_str(f, s),
            Json::Arr(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Json::Obj(fields) => {
                f.write_str("{")?;
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{}:{value}", Json::Str((*key).to_string()))?;
                }
                f.write_str("}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        let table = [
            ("plain", r#""plain""#),
            ("a\"b", r#""a\"b""#),
            ("back\\slash", r#""back\\slash""#),
            ("line\nbreak\ttab\r", r#""line\nbreak\ttab\r""#),
            ("\u{1}\u{1f}\u{8}\u{c}", r#""\u0001\u001f\b\f""#),
            ("caf\u{e9} \u{2028}", "\"caf\u{e9} \\u2028\""),
            ("\u{fffd}", "\"\u{fffd}\""),
            ("/", r#""/""#),
        ];
        for (s, want) in table {
            assert_eq!(Json::Str(s.into()).to_string(), want, "{s:?}");
        }
    }

    #[test]
    fn structure() {
        let v = Json::Arr(vec![
            Json::Obj(vec![
                ("xid", Json::Num(5)),
                ("space_total", Json::opt(None)),
                ("path", Json::Str("/m\"nt".into())),
                ("none", Json::opt_str(None)),
            ]),
            Json::Arr(vec![]),
            Json::Obj(vec![]),
        ]);
        assert_eq!(
            v.to_string(),
            r#"[{"xid":5,"space_total":null,"path":"/m\"nt","none":null},[],{}]"#
        );
    }
}
