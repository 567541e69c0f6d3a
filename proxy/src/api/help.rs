//! `help`: the commands a connection's level may run, laid out as HAProxy's CLI lays them.

use crate::config::ApiLevel;

/// Usage, what it does, the least level.
const COMMANDS: &[(&str, &str, ApiLevel)] = &[
    (
        "add server <bk>/<srv> <addr> [opts]*",
        "create a new server (with the backend's default-server)",
        ApiLevel::Admin,
    ),
    (
        "del server <bk>/<srv>",
        "remove a server in maintenance with no connection",
        ApiLevel::Admin,
    ),
    (
        "disable server <bk>/<srv>",
        "put a server in maintenance (same as 'set server … state maint')",
        ApiLevel::Admin,
    ),
    (
        "enable server <bk>/<srv>",
        "take a server out of maintenance (same as 'set server … state ready')",
        ApiLevel::Admin,
    ),
    (
        "get weight <bk>/<srv>",
        "report a server's current weight",
        ApiLevel::User,
    ),
    (
        "operator",
        "lower the level of the current CLI session to operator",
        ApiLevel::User,
    ),
    (
        "reload",
        "read the configuration again and apply it without dropping a flow",
        ApiLevel::Admin,
    ),
    (
        "set maxconn frontend <frontend> <value>",
        "change a frontend's maxconn setting",
        ApiLevel::Admin,
    ),
    (
        "set server <bk>/<srv> [opts]",
        "change a server's state (ready|drain|maint), weight or address",
        ApiLevel::Admin,
    ),
    (
        "set weight <bk>/<srv> <weight>",
        "change a server's weight (use 'set server' instead)",
        ApiLevel::Admin,
    ),
    (
        "show cli level",
        "display the level of the current CLI session",
        ApiLevel::User,
    ),
    (
        "show flows",
        "list the established flows as a table (client, server, engine, bytes, age)",
        ApiLevel::Operator,
    ),
    (
        "show info",
        "report information about the running process",
        ApiLevel::User,
    ),
    (
        "show servers state [<backend>]",
        "dump volatile server information (all or for a single backend)",
        ApiLevel::User,
    ),
    (
        "show sess",
        "report the list of current sessions",
        ApiLevel::Operator,
    ),
    (
        "show ssl cert",
        "display the SSL certificates used in memory",
        ApiLevel::Operator,
    ),
    (
        "show stat [up|no-maint]*",
        "report counters for each proxy and server",
        ApiLevel::User,
    ),
    (
        "show version",
        "show version of the current process",
        ApiLevel::User,
    ),
    (
        "user",
        "lower the level of the current CLI session to user",
        ApiLevel::User,
    ),
    ("help", "list the commands", ApiLevel::User),
    (
        "prompt",
        "toggle interactive mode with prompt",
        ApiLevel::User,
    ),
    ("quit", "disconnect", ApiLevel::User),
];

pub fn text(level: ApiLevel) -> String {
    let mut out = String::from("The following commands are valid at this level:\n");
    for (usage, what, needs) in COMMANDS {
        if *needs <= level {
            out.push_str(&format!("  {usage:<39} : {what}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_what_the_level_may_run() {
        let admin = text(ApiLevel::Admin);
        let user = text(ApiLevel::User);
        assert!(admin.starts_with("The following commands are valid at this level:\n"));
        assert!(admin.contains("\n  set server <bk>/<srv> [opts]            : change"));
        assert!(!user.contains("set server"));
        assert!(user.contains("  show stat [up|no-maint]*"));
        assert!(!text(ApiLevel::Operator).contains("add server"));
        assert!(text(ApiLevel::Operator).contains("show sess"));
    }
}
