//! No two modules import each other (issue "Structure"): a module's dependencies form layers,
//! so a newcomer can read one without the other. Modules are `src/` files (a `mod.rs` names its
//! directory); a dependency is a `crate::`, `tapes::` or `super::` path outside comments and
//! `#[cfg(test)]` code, resolved to the longest module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn modules(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            let mut next = prefix.to_vec();
            next.push(name);
            modules(&path, &next, out);
        } else if let Some(stem) = name.strip_suffix(".rs") {
            let mut parts = prefix.to_vec();
            if !matches!(stem, "mod" | "lib" | "main") {
                parts.push(stem.to_string());
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            out.insert(parts.join("::"), text);
        }
    }
}

/// The code of a file without comments and without its `#[cfg(test)]` part.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths after `crate::`, `tapes::` or `super::` in `code` (`super` made absolute).
fn paths(module: &str, code: &str) -> Vec<String> {
    let parent: Vec<&str> = module.split("::").filter(|p| !p.is_empty()).collect();
    let parent = &parent[..parent.len().saturating_sub(1)];
    let mut out = Vec::new();
    for head in ["crate::", "tapes::", "super::"] {
        let mut rest = code;
        while let Some(at) = rest.find(head) {
            let before = rest[..at].chars().last();
            rest = &rest[at + head.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                for item in inner.split(',') {
                    out.push(absolute(head, parent, item.trim()));
                }
                continue;
            }
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            out.push(absolute(head, parent, path.trim_end_matches(':')));
        }
    }
    out
}

fn absolute(head: &str, parent: &[&str], path: &str) -> String {
    if head == "super::" && !parent.is_empty() {
        format!("{}::{path}", parent.join("::"))
    } else {
        path.to_string()
    }
}

#[test]
fn no_two_modules_import_each_other() {
    let mut files = BTreeMap::new();
    modules(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &[],
        &mut files,
    );
    let names: BTreeSet<&String> = files.keys().collect();
    let resolve = |path: &str| -> Option<String> {
        let parts: Vec<&str> = path.split("::").collect();
        (1..=parts.len())
            .rev()
            .map(|n| parts[..n].join("::"))
            .find(|m| names.contains(m))
    };
    let mut deps: BTreeMap<&String, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in &files {
        let code = code(text);
        let set = deps.entry(module).or_default();
        for path in paths(module, &code) {
            if let Some(target) = resolve(&path) {
                if target != *module && !target.is_empty() {
                    set.insert(target);
                }
            }
        }
    }
    let mut cycles = Vec::new();
    for (a, targets) in &deps {
        for b in targets {
            if a.as_str() < b.as_str() && deps.get(b).is_some_and(|back| back.contains(*a)) {
                cycles.push(format!("{a} <-> {b}"));
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "modules that import each other (move the shared part down a layer): {cycles:?}"
    );
    assert!(
        files.len() > 50,
        "the walk found src/ ({} modules)",
        files.len()
    );
}
