//! `;json`: the same table as `;csv` in the shape of HAProxy's `show stat json` (an array of
//! rows, each an array of typed fields), so tools that read HAProxy's JSON read ours. HAProxy's
//! per-field `tags` (origin, nature, scope) are not emitted.

use serde_json::{json, Value};

use super::csv::{self, Field, Options, Row, COLUMNS};
use super::snapshot::Snapshot;

pub fn render(snap: &Snapshot, opts: Options) -> String {
    let rows: Vec<Value> = csv::rows(snap, opts)
        .into_iter()
        .map(|r| row(r, opts))
        .collect();
    // Serialising a `Value` cannot fail; the fallback keeps the no-panic rule without unwrap.
    serde_json::to_string_pretty(&Value::Array(rows)).unwrap_or_else(|_| "[]".into())
}

fn row(r: Row<'_>, opts: Options) -> Value {
    let (obj_type, proxy_id, id) = match r {
        Row::Frontend(p, _) => ("Frontend", p.id, 0),
        Row::Server(p, s) => ("Server", p.id, s.id),
        Row::Backend(p, _) => ("Backend", p.id, 0),
    };
    let fields: Vec<Value> = COLUMNS
        .iter()
        .enumerate()
        .filter_map(|(pos, name)| {
            let value = typed(csv::value(name, r, opts))?;
            Some(json!({
                "objType": obj_type,
                "proxyId": proxy_id,
                "id": id,
                "field": { "pos": pos, "name": name },
                "processNum": 1,
                "value": value,
            }))
        })
        .collect();
    Value::Array(fields)
}

/// HAProxy's typed value; empty fields are left out of the row, as HAProxy does.
fn typed(f: Field) -> Option<Value> {
    match f {
        Field::Empty => None,
        Field::Num(n) => Some(json!({ "type": "u64", "value": n })),
        Field::Signed(n) => Some(json!({ "type": "s64", "value": n })),
        Field::Str(s) => Some(json!({ "type": "str", "value": s })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::tests::snapshot;

    #[test]
    fn rows_carry_typed_fields() {
        let text = render(&snapshot(), Options::default());
        let doc: Value = serde_json::from_str(&text).expect("valid JSON");
        let rows = doc.as_array().expect("array of rows");
        assert_eq!(rows.len(), 6);
        let server = rows[3].as_array().expect("fields");
        let find = |name: &str| {
            server
                .iter()
                .find(|f| f["field"]["name"] == name)
                .map(|f| f["value"].clone())
        };
        assert_eq!(
            find("svname"),
            Some(json!({"type": "str", "value": "ams1"}))
        );
        assert_eq!(find("bin"), Some(json!({"type": "u64", "value": 1000})));
        assert_eq!(find("addr"), None, "empty fields are omitted");
        assert_eq!(server[0]["objType"], "Server");
        assert_eq!(server[0]["proxyId"], 3);
        assert_eq!(server[0]["id"], 1);
        assert_eq!(server[0]["field"]["pos"], 0);
    }
}
