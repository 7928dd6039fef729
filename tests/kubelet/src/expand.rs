//! `$(VAR)` expansion with Kubernetes semantics, used for env values, `command`, `args` and
//! `subPathExpr`.
//!
//! The rules (from the Kubernetes API reference for `Container.command`): `$(VAR)` is replaced by
//! the variable's value; a reference to a variable that is not defined is left as written;
//! `$$(VAR)` is an escape that yields the literal `$(VAR)`; any other `$` is kept.

/// Expands `$(NAME)` references in `input`, asking `lookup` for each name.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        match after.chars().next() {
            // A trailing `$` is just a character.
            None => {
                out.push('$');
                rest = "";
            }
            // `$$` is an escaped `$`: the second one is consumed and never starts a reference.
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('(') => match after.find(')') {
                Some(close) => {
                    let name = &after[1..close];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &after[close + 1..];
                }
                // An unterminated reference is kept verbatim.
                None => {
                    out.push_str("$(");
                    rest = &after[1..];
                }
            },
            // `$x` is not a reference; Kubernetes copies both characters.
            Some(c) => {
                out.push('$');
                out.push(c);
                rest = &after[c.len_utf8()..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::expand;
    use std::collections::HashMap;

    fn with(vars: &[(&str, &str)], input: &str) -> String {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        expand(input, |name| map.get(name).cloned())
    }

    #[test]
    fn replaces_known_variables() {
        assert_eq!(
            with(&[("POD_IP", "127.0.0.10")], "--bind $(POD_IP):8080"),
            "--bind 127.0.0.10:8080"
        );
        assert_eq!(with(&[("A", "1"), ("B", "2")], "$(A)$(B)"), "12");
    }

    #[test]
    fn keeps_unknown_references() {
        assert_eq!(with(&[], "x $(NOPE) y"), "x $(NOPE) y");
        assert_eq!(with(&[], "$()"), "$()");
    }

    #[test]
    fn double_dollar_escapes() {
        assert_eq!(with(&[("A", "1")], "$$(A)"), "$(A)");
        assert_eq!(with(&[("A", "1")], "$$$(A)"), "$1");
        assert_eq!(with(&[], "cost: $$5"), "cost: $5");
    }

    #[test]
    fn other_dollars_are_kept() {
        assert_eq!(with(&[("A", "1")], "$A ${A} $"), "$A ${A} $");
        assert_eq!(with(&[("A", "1")], "$(A"), "$(A");
        assert_eq!(with(&[("A", "1")], "$é$(A)"), "$é1");
    }
}
