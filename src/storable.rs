//! What PostgreSQL can store. Its `text` and `jsonb` refuse the NUL character (`\0`, JSON's
//! `\u0000`), and a statement that meets one fails whole: one such value in a batch would
//! fail every job of it, again and again. So input that carries one is refused at the edge
//! (`protocol`), and what workers report (results, errors, progress) is made storable
//! (`sanitize`): NUL becomes U+FFFD, the replacement character, and nothing else changes.

use serde_json::Value;

/// The character NUL is replaced with.
pub const REPLACEMENT: char = '\u{FFFD}';

/// Whether `s` can be stored as text.
pub fn storable(s: &str) -> bool {
    !s.contains('\0')
}

/// Whether every string and key in `v` can be stored.
pub fn storable_json(v: &Value) -> bool {
    match v {
        Value::String(s) => storable(s),
        Value::Array(items) => items.iter().all(storable_json),
        Value::Object(map) => map.iter().all(|(k, v)| storable(k) && storable_json(v)),
        _ => true,
    }
}

/// `s` with every NUL replaced.
pub fn sanitize(s: String) -> String {
    if storable(&s) {
        s
    } else {
        s.replace('\0', &REPLACEMENT.to_string())
    }
}

/// `v` with every NUL in its strings and keys replaced.
pub fn sanitize_json(v: Value) -> Value {
    if storable_json(&v) {
        return v;
    }
    match v {
        Value::String(s) => Value::String(sanitize(s)),
        Value::Array(items) => Value::Array(items.into_iter().map(sanitize_json).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (sanitize(k), sanitize_json(v)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn nul_is_found_anywhere_and_replaced_everywhere() {
        let bad = json!({"a": ["x\u{0}y", {"k\u{0}": 1}], "b": "fine"});
        assert!(!storable_json(&bad));
        let clean = sanitize_json(bad);
        assert!(storable_json(&clean));
        assert_eq!(
            clean,
            json!({"a": ["x\u{FFFD}y", {"k\u{FFFD}": 1}], "b": "fine"})
        );
        assert_eq!(
            sanitize_json(json!({"ok": [1, "two"]})),
            json!({"ok": [1, "two"]})
        );
    }

    proptest! {
        #[test]
        fn sanitized_strings_are_storable_and_keep_everything_else(s in ".*") {
            let clean = sanitize(s.clone());
            prop_assert!(storable(&clean));
            prop_assert_eq!(clean.chars().count(), s.chars().count());
            if storable(&s) {
                prop_assert_eq!(clean, s);
            }
        }
    }
}
