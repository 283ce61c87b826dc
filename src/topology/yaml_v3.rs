//! Writes YAML laid out as Go's yaml.v3 writes it, which is what TiUP (1.16.3 and later) writes
//! meta.yaml with: 4-space indents, sequence items indented under their key, `{}`/`[]` for empty
//! collections. Scalars are rendered by yaml_serde, so quoting rules stay the library's.
//!
//! One quirk is kept on purpose: a mapping that starts on a `- ` line has its keys two columns
//! right of the dash, but yaml.v3 indents what nests under those keys from the dash, so the
//! children of `config:` in a list item sit only two columns deeper than `config` itself.

use std::fmt::Write;

use yaml_serde::Value;

const INDENT: usize = 4;

/// Renders `value` (a mapping at the top) as a yaml.v3-style document.
pub fn to_string(value: &Value) -> Result<String, yaml_serde::Error> {
    let mut out = String::new();
    match value {
        Value::Mapping(map) if !map.is_empty() => write_mapping(&mut out, map, 0, 0)?,
        other => {
            out.push_str(&scalar(other, 0)?);
            out.push('\n');
        }
    }
    Ok(out)
}

/// Writes `map` with its keys at `key_column`; what nests under a key is indented from
/// `indent` (the same column, except for a mapping opened by a sequence dash).
fn write_mapping(
    out: &mut String,
    map: &yaml_serde::Mapping,
    indent: usize,
    key_column: usize,
) -> Result<(), yaml_serde::Error> {
    for (key, value) in map {
        // The first key of a list item follows its dash on the same line.
        if !out.is_empty() && !out.ends_with("- ") {
            pad(out, key_column);
        }
        out.push_str(&scalar(key, indent)?);
        out.push(':');
        write_value_after_key(out, value, indent)?;
    }
    Ok(())
}

fn write_value_after_key(
    out: &mut String,
    value: &Value,
    indent: usize,
) -> Result<(), yaml_serde::Error> {
    match value {
        Value::Mapping(map) if !map.is_empty() => {
            out.push('\n');
            write_mapping(out, map, indent + INDENT, indent + INDENT)
        }
        Value::Sequence(items) if !items.is_empty() => {
            out.push('\n');
            write_sequence(out, items, indent + INDENT)
        }
        Value::Tagged(tagged) => {
            let _ = write!(out, " {}", tagged.tag);
            write_value_after_key(out, &tagged.value, indent)
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other, indent + INDENT)?);
            out.push('\n');
            Ok(())
        }
    }
}

fn write_sequence(
    out: &mut String,
    items: &[Value],
    indent: usize,
) -> Result<(), yaml_serde::Error> {
    for item in items {
        pad(out, indent);
        out.push_str("- ");
        match item {
            Value::Mapping(map) if !map.is_empty() => write_mapping(out, map, indent, indent + 2)?,
            Value::Sequence(inner) if !inner.is_empty() => {
                out.push('\n');
                write_sequence(out, inner, indent + INDENT)?;
            }
            other => {
                out.push_str(&scalar(other, indent + INDENT)?);
                out.push('\n');
            }
        }
    }
    Ok(())
}

/// A scalar (or empty collection) as yaml_serde renders it; a block scalar's body lines are
/// re-indented to sit under `indent`.
fn scalar(value: &Value, indent: usize) -> Result<String, yaml_serde::Error> {
    let rendered = yaml_serde::to_string(value)?;
    let rendered = rendered.strip_suffix('\n').unwrap_or(&rendered);
    let mut lines = rendered.lines();
    let mut result = lines.next().unwrap_or_default().to_owned();
    for line in lines {
        result.push('\n');
        if !line.is_empty() {
            // yaml_serde indents block scalar bodies by two spaces at the top level.
            pad(&mut result, indent);
            result.push_str(line.strip_prefix("  ").unwrap_or(line));
        }
    }
    Ok(result)
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(src: &str) -> String {
        let value: Value = yaml_serde::from_str(src).unwrap();
        let written = to_string(&value).unwrap();
        let reread: Value = yaml_serde::from_str(&written).unwrap();
        assert_eq!(reread, value, "semantics changed:\n{written}");
        written
    }

    #[test]
    fn writes_tiup_layout() {
        let src = "user: tidb\ntopology:\n    master_servers:\n        - host: 127.0.9.1\n          port: 8261\n          config: {}\n        - host: 127.0.9.2\n    worker_servers: []\n";
        assert_eq!(roundtrip(src), src);
    }

    #[test]
    fn converts_yaml_v2_layout() {
        let v2 = "topology:\n  master_servers:\n  - host: a\n    ports:\n    - 1\n    - 2\n";
        let v3 = "topology:\n    master_servers:\n        - host: a\n          ports:\n            - 1\n            - 2\n";
        assert_eq!(roundtrip(v2), v3);
        let nested = "list:\n- name: a\n  config:\n    deeper:\n      key: 1\n";
        let nested_v3 =
            "list:\n    - name: a\n      config:\n        deeper:\n            key: 1\n";
        assert_eq!(roundtrip(nested), nested_v3);
    }

    #[test]
    fn keeps_awkward_scalars() {
        roundtrip(
            "a: 'yes'\nb: '0123'\nc: \"multi\\nline\\n\"\nd: ''\ne: ~\nf: 'x: y'\ng: [[1, 2], []]\n",
        );
    }

    #[test]
    fn block_scalars_nest() {
        roundtrip(
            "outer:\n    inner:\n        - text: \"line one\\nline two\\n\"\n          other: 1\n",
        );
    }
}
