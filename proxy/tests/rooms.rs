//! The rooms of `src/` (its top-level folders) may import each other only one way: no import
//! circle spans two rooms (README, Layout). This walks the sources and fails naming a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Every `crate::ROOM` a room's files name, the room itself left out.
fn imports(src: &Path) -> Graph {
    let rooms: BTreeSet<String> = fs::read_dir(src)
        .expect("src")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut graph = Graph::new();
    for room in &rooms {
        let mut named = BTreeSet::new();
        for text in sources(&src.join(room)) {
            for word in crate_paths(&text) {
                if rooms.contains(&word) && word != *room {
                    named.insert(word);
                }
            }
        }
        graph.insert(room.clone(), named);
    }
    graph
}

fn sources(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).expect("room").filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(fs::read_to_string(&path).expect("source"));
        }
    }
    out
}

/// The first name after each `crate::`, and every name inside `crate::{…}`.
fn crate_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let group = rest
            .strip_prefix('{')
            .and_then(|r| r.split_once('}'))
            .map(|(g, _)| g);
        let words = group.unwrap_or_else(|| rest.split(|c: char| !is_word(c)).next().unwrap_or(""));
        out.extend(
            words
                .split(|c: char| !is_word(c))
                .filter(|w| !w.is_empty())
                .map(str::to_string),
        );
    }
    out
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// A path of rooms from `from` back to `to`, if the graph has one.
fn path_back(
    graph: &Graph,
    from: &str,
    to: &str,
    seen: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if from == to {
        return Some(vec![to.to_string()]);
    }
    if !seen.insert(from.to_string()) {
        return None;
    }
    for next in graph.get(from).into_iter().flatten() {
        if let Some(mut p) = path_back(graph, next, to, seen) {
            p.insert(0, from.to_string());
            return Some(p);
        }
    }
    None
}

fn circles(graph: &Graph) -> Vec<String> {
    let mut found = Vec::new();
    for (room, named) in graph {
        for next in named {
            if let Some(p) = path_back(graph, next, room, &mut BTreeSet::new()) {
                found.push(format!("{room} -> {}", p.join(" -> ")));
            }
        }
    }
    found
}

#[test]
fn no_import_circle_spans_two_rooms() {
    let graph = imports(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(graph.contains_key("counters") && graph.contains_key("upstream"));
    assert!(
        graph["counters"].is_empty(),
        "the ground floor imports nothing: {:?}",
        graph["counters"]
    );
    // DNS discovery changes servers only through upstream's run-time calls: it sits beside
    // health, below the modes, and nothing under runtime starts it.
    let allowed: BTreeSet<String> = ["config", "upstream"].map(String::from).into();
    assert!(
        graph["discovery"].is_subset(&allowed),
        "discovery imports {:?}",
        graph["discovery"]
    );
    let found = circles(&graph);
    assert!(
        found.is_empty(),
        "import circles between rooms:\n{}",
        found.join("\n")
    );
}

/// The runtime API sits above the renderers it reuses and below the runtime that lends it
/// what only the runtime knows (a trait it implements), never the other way.
#[test]
fn api_sits_between_stats_and_runtime() {
    let graph = imports(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let api = &graph["api"];
    assert!(api.contains("stats"), "api renders with stats: {api:?}");
    assert!(
        !api.contains("runtime"),
        "api must not import runtime: {api:?}"
    );
    assert!(graph["runtime"].contains("api"), "runtime starts the api");
    for below in [
        "counters", "config", "upstream", "plan", "stats", "tcp", "http",
    ] {
        assert!(
            !graph[below].contains("api"),
            "{below} is below api and must not import it"
        );
    }
}

#[test]
fn a_circle_is_found() {
    let mut g = Graph::new();
    g.insert("a".into(), ["b".to_string()].into());
    g.insert("b".into(), ["c".to_string()].into());
    g.insert("c".into(), ["a".to_string()].into());
    g.insert("d".into(), ["a".to_string()].into());
    assert_eq!(circles(&g).len(), 3, "{:?}", circles(&g));
    g.insert("c".into(), BTreeSet::new());
    assert!(circles(&g).is_empty());
    assert_eq!(
        crate_paths("use crate::{a::X, b};\nx = crate::c::y;"),
        ["a", "X", "b", "c"]
    );
}
