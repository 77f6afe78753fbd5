//! Reading JSON input files: comments (ARM templates allow `//` and `/* */`), a clear error
//! with the file, line and column, and the 1-based line where each object or array starts.
//!
//! serde_json gives no positions, so after it has parsed (and thereby validated) the text, a
//! small scanner walks the same text once and records the starting line of every container
//! down to a depth, keyed by its path of object keys and array indexes.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::Value;

use crate::error::PolicyError;

/// One step of a path into a JSON document.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Seg {
    /// An object member, by its key as written.
    Key(String),
    /// An array element.
    Index(usize),
}

/// The starting lines of containers, by path.
pub(crate) type Lines = HashMap<Vec<Seg>, u32>;

/// A parsed input file: the value, and the text it was parsed from (comments blanked out, same
/// offsets and lines as the file).
pub(crate) struct Parsed<'a> {
    pub(crate) value: Value,
    pub(crate) text: Cow<'a, str>,
}

/// Parses a JSON (with comments) file; errors name `file` and the line and column.
pub(crate) fn parse<'a>(text: &'a str, file: &str) -> Result<Parsed<'a>, PolicyError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(PolicyError::Input(format!("{file}: the file is empty")));
    }
    let text = strip_comments(text);
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        let msg = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let msg = msg.strip_suffix(&suffix).unwrap_or(&msg);
        PolicyError::Input(format!(
            "{file}: invalid JSON at line {}, column {}: {msg}",
            e.line(),
            e.column()
        ))
    })?;
    Ok(Parsed { value, text })
}

/// Blanks out `//` and `/* */` comments outside strings (newlines kept), so offsets, lines and
/// columns stay those of the file. Text without comments is returned as is.
pub(crate) fn strip_comments(text: &str) -> Cow<'_, str> {
    let b = text.as_bytes();
    // Find the comments first (one pass, no copy): most files have none.
    let mut comments: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while let Some(off) = memchr::memchr2(b'"', b'/', &b[i..]) {
        i += off;
        if b[i] == b'"' {
            // Skip the string: to the next unescaped quote.
            i += 1;
            while let Some(off) = memchr::memchr2(b'"', b'\\', &b[i..]) {
                i += off;
                if b[i] == b'\\' {
                    i += 2;
                } else {
                    break;
                }
            }
            i += 1;
            if i >= b.len() {
                break;
            }
            continue;
        }
        match b.get(i + 1) {
            Some(b'/') => {
                let end = memchr::memchr(b'\n', &b[i..]).map_or(b.len(), |o| i + o);
                comments.push((i, end));
                i = end;
            }
            Some(b'*') => {
                let end =
                    memchr::memmem::find(&b[i + 2..], b"*/").map_or(b.len(), |o| i + 2 + o + 2);
                comments.push((i, end));
                i = end;
            }
            _ => i += 1,
        }
        if i >= b.len() {
            break;
        }
    }
    if comments.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = b.to_vec();
    for (start, end) in comments {
        for o in &mut out[start..end] {
            if *o != b'\n' && *o != b'\r' {
                *o = b' ';
            }
        }
    }
    // Every byte replaced was part of a comment, and whole characters were replaced, so the
    // result is still UTF-8; fall back to the original text if that ever were not so.
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(_) => Cow::Borrowed(text),
    }
}

/// The starting line of every object and array at most `max_depth` steps from the root (the
/// root itself is at depth 0). `text` must be valid JSON (already parsed by serde_json, with
/// comments blanked out).
pub(crate) fn container_lines(text: &str, max_depth: usize) -> Lines {
    let mut s = Scanner {
        b: text.as_bytes(),
        text,
        i: 0,
        line: 1,
        max_depth,
        out: HashMap::new(),
    };
    let mut path = Vec::new();
    s.value(&mut path);
    s.out
}

struct Scanner<'a> {
    b: &'a [u8],
    text: &'a str,
    i: usize,
    line: u32,
    max_depth: usize,
    out: Lines,
}

impl Scanner<'_> {
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b'\n' => self.line += 1,
                b' ' | b'\t' | b'\r' => {}
                _ => return,
            }
            self.i += 1;
        }
    }

    /// Skips a string starting at the current `"`; returns its raw contents (between quotes).
    fn string(&mut self) -> (usize, usize) {
        self.i += 1;
        let start = self.i;
        while let Some(off) = self
            .b
            .get(self.i..)
            .and_then(|r| memchr::memchr2(b'"', b'\\', r))
        {
            self.i += off;
            if self.b[self.i] == b'\\' {
                self.i += 2;
            } else {
                let end = self.i;
                self.i += 1;
                return (start, end);
            }
        }
        self.i = self.b.len();
        (start, self.b.len())
    }

    fn key(&mut self) -> String {
        let (start, end) = self.string();
        let raw = self.text.get(start..end).unwrap_or("");
        if raw.contains('\\') {
            let quoted = self.text.get(start - 1..end + 1).unwrap_or("\"\"");
            serde_json::from_str(quoted).unwrap_or_else(|_| raw.to_string())
        } else {
            raw.to_string()
        }
    }

    fn value(&mut self, path: &mut Vec<Seg>) {
        self.ws();
        match self.b.get(self.i) {
            Some(b'{') | Some(b'[') if path.len() > self.max_depth => self.skip_container(),
            Some(b'{') => {
                self.out.insert(path.clone(), self.line);
                self.i += 1;
                loop {
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b'"') => {
                            let k = self.key();
                            self.ws();
                            self.i += 1; // ':'
                            path.push(Seg::Key(k));
                            self.value(path);
                            path.pop();
                            self.ws();
                            if self.b.get(self.i) == Some(&b',') {
                                self.i += 1;
                            }
                        }
                        Some(b'}') => {
                            self.i += 1;
                            return;
                        }
                        _ => return,
                    }
                }
            }
            Some(b'[') => {
                self.out.insert(path.clone(), self.line);
                self.i += 1;
                let mut n = 0;
                loop {
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b']') => {
                            self.i += 1;
                            return;
                        }
                        None => return,
                        Some(_) => {
                            path.push(Seg::Index(n));
                            self.value(path);
                            path.pop();
                            n += 1;
                            self.ws();
                            if self.b.get(self.i) == Some(&b',') {
                                self.i += 1;
                            }
                        }
                    }
                }
            }
            Some(b'"') => {
                self.string();
            }
            Some(_) => {
                while self.b.get(self.i).is_some_and(|c| {
                    !matches!(c, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t')
                }) {
                    self.i += 1;
                }
            }
            None => {}
        }
    }

    /// Skips a whole object or array, counting lines.
    fn skip_container(&mut self) {
        let mut depth = 0usize;
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b'"' => {
                    self.string();
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        self.i += 1;
                        return;
                    }
                }
                b'\n' => self.line += 1,
                _ => {}
            }
            self.i += 1;
        }
    }
}

/// `path` as text for messages: `resources[2].properties.template`.
pub(crate) fn path_text(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(k: &str) -> Seg {
        Seg::Key(k.to_string())
    }

    #[test]
    fn lines_of_containers() {
        let text =
            "{\n  \"a\": [\n    {\"x\": \"}]\\\"\"},\n    {\n    }\n  ],\n  \"b\\u0041\": {}\n}";
        let p = parse(text, "f.json").unwrap();
        let lines = container_lines(&p.text, 10);
        assert_eq!(lines[&vec![]], 1);
        assert_eq!(lines[&vec![key("a")]], 2);
        assert_eq!(lines[&vec![key("a"), Seg::Index(0)]], 3);
        assert_eq!(lines[&vec![key("a"), Seg::Index(1)]], 4);
        assert_eq!(lines[&vec![key("bA")]], 7);
        let shallow = container_lines(&p.text, 1);
        assert!(!shallow.contains_key(&vec![key("a"), Seg::Index(1)]));
        assert_eq!(shallow[&vec![key("bA")]], 7);
    }

    #[test]
    fn comments_are_blanked() {
        let text =
            "{ // a comment with \"quotes\"\n \"a\": \"http://x\", /* multi\nline */ \"b\": [1]\n}";
        let p = parse(text, "f.json").unwrap();
        assert_eq!(p.value["a"], "http://x");
        assert_eq!(container_lines(&p.text, 5)[&vec![key("b")]], 3);
        assert!(matches!(
            strip_comments("{\"a\": \"//\"}"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn byte_order_mark_and_crlf() {
        let p = parse("\u{feff}[\r\n  {\"a\": 1},\r\n  {}\r\n]", "f.json").unwrap();
        let lines = container_lines(&p.text, 1);
        assert_eq!(lines[&vec![Seg::Index(1)]], 3);
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let e = parse("{\n  \"a\": 1,\n  \"b\" 2\n}", "t.json")
            .err()
            .unwrap()
            .to_string();
        assert_eq!(e, "t.json: invalid JSON at line 3, column 7: expected `:`");
        let e = parse("  \n", "t.json").err().unwrap().to_string();
        assert_eq!(e, "t.json: the file is empty");
    }
}
