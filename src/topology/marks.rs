//! The `patched` marks written into meta.yaml as a text edit, so that the file keeps its
//! layout: TiUP built with yaml.v2 indents lists one way, with yaml.v3 another, and an operator
//! may have added comments. Only the `patched` lines of the instances' entries change.
//!
//! The edit follows the block layout TiUP writes (`topology:`, then `master_servers:` and
//! `worker_servers:`, each a list of `- key: value` entries). Anything else (flow style,
//! anchors, a layout it cannot follow) yields `None`, and the caller writes the file whole;
//! the caller also checks that the edited text reads as the meta it means to write.

use super::Role;

/// One entry's mark: the entry of `role` at `host:port` should (not) say `patched: true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark<'a> {
    pub role: Role,
    pub host: &'a str,
    pub port: u16,
    pub patched: bool,
}

/// `text` with every mark applied, or `None` when its layout is not one this edit follows.
pub fn with_marks(text: &str, marks: &[Mark<'_>]) -> Option<String> {
    let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_owned).collect();
    // Edited from the bottom up, so that the line numbers found first stay true.
    let mut edits: Vec<Edit> = Vec::new();
    for role in [Role::Master, Role::Worker] {
        let Some(entries) = entries(&lines, section_key(role))? else { continue };
        for entry in entries {
            let Some(mark) = marks.iter().find(|m| {
                m.role == role
                    && m.host == entry.host
                    && m.port == entry.port.unwrap_or(role.default_port())
            }) else {
                continue;
            };
            if let Some(edit) = entry.edit(mark.patched) {
                edits.push(edit);
            }
        }
    }
    edits.sort_by_key(|edit| std::cmp::Reverse(edit.line()));
    for edit in edits {
        match edit {
            Edit::Replace(at, indent) => lines[at] = patched_line(indent, &lines[at]),
            Edit::Remove(at) => {
                lines.remove(at);
            }
            Edit::InsertAfter(at, indent) => {
                let line = patched_line(indent, &lines[at]);
                lines.insert(at + 1, line);
            }
        }
    }
    Some(lines.concat())
}

fn section_key(role: Role) -> &'static str {
    match role {
        Role::Master => "master_servers",
        Role::Worker => "worker_servers",
    }
}

/// `patched: true` at `indent`, ending as the line beside it ends.
fn patched_line(indent: usize, beside: &str) -> String {
    let ending = if beside.ends_with("\r\n") { "\r\n" } else { "\n" };
    format!("{}patched: true{ending}", " ".repeat(indent))
}

enum Edit {
    Replace(usize, usize),
    Remove(usize),
    InsertAfter(usize, usize),
}

impl Edit {
    fn line(&self) -> usize {
        match *self {
            Edit::Replace(at, _) | Edit::Remove(at) | Edit::InsertAfter(at, _) => at,
        }
    }
}

/// One `- ...` entry of a server list.
#[derive(Debug)]
struct Entry {
    host: String,
    port: Option<u16>,
    /// The indent of its keys (two past its `- `).
    key_indent: usize,
    /// The line of its `patched:` key.
    patched: Option<usize>,
    /// The line `patched:` goes after when it is added: the last of `host:`, `ssh_port:`,
    /// `imported:`, the fields TiUP writes before it.
    before_patched: usize,
}

impl Entry {
    fn edit(&self, patched: bool) -> Option<Edit> {
        match (self.patched, patched) {
            (Some(at), true) => Some(Edit::Replace(at, self.key_indent)),
            (Some(at), false) => Some(Edit::Remove(at)),
            (None, true) => Some(Edit::InsertAfter(self.before_patched, self.key_indent)),
            (None, false) => None,
        }
    }
}

/// The entries of `topology.<section>`: `Some(None)` when there is no such list, `None` when
/// the layout is not one this edit follows.
fn entries(lines: &[String], section: &str) -> Option<Option<Vec<Entry>>> {
    let topology = lines.iter().position(|line| line.trim_end() == "topology:")?;
    let mut at = topology + 1;
    let mut section_indent = None;
    while at < lines.len() {
        let line = &lines[at];
        if is_blank_or_comment(line) {
            at += 1;
            continue;
        }
        let indent = indent_of(line);
        if indent == 0 {
            break;
        }
        if line.trim() == format!("{section}:") {
            section_indent = Some(indent);
            break;
        }
        at += 1;
    }
    let Some(section_indent) = section_indent else { return Some(None) };
    let mut entries = Vec::new();
    let mut current: Option<Entry> = None;
    let mut dash_indent = None;
    for (index, line) in lines.iter().enumerate().skip(at + 1) {
        if is_blank_or_comment(line) {
            continue;
        }
        let indent = indent_of(line);
        let body = line.trim();
        let is_dash = body == "-" || body.starts_with("- ");
        if indent < section_indent || (indent == section_indent && !is_dash) {
            break;
        }
        if is_dash && dash_indent.is_none_or(|dash| dash == indent) {
            dash_indent = Some(indent);
            entries.extend(current.take());
            let key_indent = indent + 2;
            let mut entry = Entry {
                host: String::new(),
                port: None,
                key_indent,
                patched: None,
                before_patched: index,
            };
            let first = body.strip_prefix('-').unwrap_or_default().trim_start();
            if !first.is_empty() {
                entry.read_key(first, index)?;
            }
            current = Some(entry);
            continue;
        }
        let entry = current.as_mut()?;
        if indent == entry.key_indent {
            entry.read_key(body, index)?;
        } else if indent < entry.key_indent {
            return None;
        }
    }
    entries.extend(current);
    // An entry without a host is not one TiUP wrote (and not one to guess about).
    if entries.iter().any(|entry| entry.host.is_empty()) {
        return None;
    }
    Some(Some(entries))
}

impl Entry {
    /// Reads one `key: value` line of the entry; `None` for what a block mapping of scalars
    /// would not hold here (flow style, anchors, a line that is not `key: ...`).
    fn read_key(&mut self, body: &str, index: usize) -> Option<()> {
        if body.starts_with(['{', '[', '&', '*', '?', '-']) {
            return None;
        }
        let (key, value) = body.split_once(':')?;
        let value = value.split(" #").next().unwrap_or_default().trim();
        let scalar = || value.trim_matches(|c| c == '"' || c == '\'').to_owned();
        match key.trim() {
            "host" => {
                self.host = scalar();
                self.before_patched = index;
            }
            "port" => self.port = Some(scalar().parse().ok()?),
            "ssh_port" | "imported" => self.before_patched = index,
            "patched" => self.patched = Some(index),
            _ => {}
        }
        Some(())
    }
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_blank_or_comment(line: &str) -> bool {
    let body = line.trim();
    body.is_empty() || body.starts_with('#')
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: &str = "user: tidb\ntopology:\n  global:\n    user: tidb\n  master_servers:\n  \
                      - host: 127.0.9.21\n    ssh_port: 22\n    port: 8261\n  worker_servers:\n  \
                      - host: 127.0.9.21\n    port: 8262\n    patched: true\n    arch: amd64\n  \
                      - host: 127.0.9.22\n    config:\n      log-level: info\n";
    const V3: &str = "user: tidb\ntopology:\n    master_servers:\n        - host: 127.0.9.21\n          \
                      port: 8261\n    worker_servers:\n        # the first one\n        - host: \
                      \"127.0.9.21\"\n          port: 8262\n";

    fn mark(role: Role, host: &str, port: u16, patched: bool) -> Mark<'_> {
        Mark { role, host, port, patched }
    }

    #[test]
    fn a_v2_file_changes_only_in_its_marks() {
        let marks = [
            mark(Role::Master, "127.0.9.21", 8261, true),
            mark(Role::Worker, "127.0.9.21", 8262, false),
            mark(Role::Worker, "127.0.9.22", 8262, true),
        ];
        let edited = with_marks(V2, &marks).unwrap();
        let expected = V2
            .replace("    ssh_port: 22\n", "    ssh_port: 22\n    patched: true\n")
            .replace("    port: 8262\n    patched: true\n", "    port: 8262\n")
            .replace("  - host: 127.0.9.22\n", "  - host: 127.0.9.22\n    patched: true\n");
        assert_eq!(edited, expected);
    }

    #[test]
    fn a_v3_file_keeps_its_indents_and_comments() {
        let marks = [mark(Role::Worker, "127.0.9.21", 8262, true)];
        let edited = with_marks(V3, &marks).unwrap();
        let expected = V3.replace("\"127.0.9.21\"\n", "\"127.0.9.21\"\n          patched: true\n");
        assert_eq!(edited, expected);
        assert_eq!(with_marks(&edited, &marks).unwrap(), edited, "marked once");
    }

    #[test]
    fn a_layout_it_cannot_follow_is_left_to_the_whole_writer() {
        let flow = "topology:\n  worker_servers:\n  - {host: 127.0.9.21, port: 8262}\n";
        assert_eq!(with_marks(flow, &[mark(Role::Worker, "127.0.9.21", 8262, true)]), None);
        let anchored = "topology:\n  worker_servers:\n  - &w\n    host: a\n";
        assert_eq!(with_marks(anchored, &[]), None);
        let no_host = "topology:\n  worker_servers:\n  - port: 8262\n";
        assert_eq!(with_marks(no_host, &[]), None);
        let nothing = "topology:\n  global:\n    user: tidb\n";
        assert_eq!(with_marks(nothing, &[]).as_deref(), Some(nothing), "no list: nothing to do");
    }
}
