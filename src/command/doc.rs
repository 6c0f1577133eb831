//! The built-in command table as README shows it: one Markdown row per command, generated
//! from the model itself (`tests/readme.rs` fails when README and the model disagree).

use std::fmt::Write;

use super::keys::Keys;
use super::spec::{CmdSpec, Flags, ResponsePolicy, Route, Shape, Timeout};
use super::table::COMMANDS;

/// Where the keys are, in words.
fn keys(k: &Keys) -> String {
    match *k {
        Keys::None => "none".into(),
        Keys::Range {
            first,
            last,
            step: 1,
        } if first as i16 == last as i16 => format!("arg {first}"),
        Keys::Range { first, last, step } => {
            let last = if last == -1 {
                "last".to_string()
            } else if last < 0 {
                format!("last{last}")
            } else {
                last.to_string()
            };
            if step == 1 {
                format!("args {first}..{last}")
            } else {
                format!("args {first}..{last}, every {step}")
            }
        }
        Keys::NumKeys { at, dest } => {
            let dest = if dest { "arg 1, and " } else { "" };
            format!("{dest}count at arg {at}, then that many")
        }
        Keys::Streams => "after STREAMS, half of the rest".into(),
        Keys::Specs(_) => "server's key specs".into(),
    }
}

fn route(r: &Route) -> String {
    match r {
        Route::Slot => "keys' slot".into(),
        Route::Split(Shape::Keys) => "split per slot".into(),
        Route::Split(Shape::Pairs) => "split per slot (key/value pairs)".into(),
        Route::AllMasters => "every master".into(),
        Route::PubSubHome => "pub/sub home master".into(),
        Route::Local => "answered by slotgate".into(),
        Route::Transaction => "transaction's pinned connection".into(),
        Route::Subscription => "subscriber connections".into(),
        Route::Scan => "each master in turn (cursor)".into(),
        Route::Wait => "masters this client wrote to".into(),
        Route::Info => "every master, totals summed".into(),
        Route::RandomKey => "masters in random order".into(),
        Route::Container => "by subcommand".into(),
        Route::Error(text) => format!("answers `-{text}`"),
        Route::Refused(reason) => format!("refused: {reason}"),
    }
}

fn policy(spec: &CmdSpec) -> &'static str {
    if !matches!(
        spec.route,
        Route::Split(_) | Route::AllMasters | Route::Wait
    ) {
        return "";
    }
    match spec.policy {
        ResponsePolicy::OneReply => "",
        ResponsePolicy::AggSum => "sum",
        ResponsePolicy::AggMin => "minimum",
        ResponsePolicy::AggMax => "maximum",
        ResponsePolicy::AggLogicalAnd => "element-wise AND",
        ResponsePolicy::AggLogicalOr => "element-wise OR",
        ResponsePolicy::CombineArrays => "values in key order",
        ResponsePolicy::Concat => "concatenated",
        ResponsePolicy::ConcatUnique => "union",
        ResponsePolicy::SumPairs => "counts summed per name",
        ResponsePolicy::AllSucceeded => "all succeeded, else first error",
        ResponsePolicy::OneSucceeded => "one succeeded, else first error",
        ResponsePolicy::Special => "its own",
    }
}

fn flags(spec: &CmdSpec) -> String {
    let mut out = Vec::new();
    for (flag, name) in [
        (Flags::WRITE, "write"),
        (Flags::READONLY, "readonly"),
        (Flags::BLOCKING, "blocking"),
        (Flags::MIRROR_NEEDS_REPLY, "mirrored from reply"),
        (Flags::MIRROR_ABSOLUTE_TIME, "mirrored with absolute time"),
        (Flags::MIRRORED, "mirrored"),
        (Flags::CONNECTION_STATE, "connection state"),
        (Flags::NO_AUTH, "before AUTH"),
        (Flags::NO_MULTI, "not in MULTI"),
        (Flags::ALLOW_BUSY, "own connection"),
    ] {
        if spec.flags.contains(flag) {
            out.push(name);
        }
    }
    if spec.timeout == Timeout::BlockOption {
        out.push("blocking with BLOCK");
    }
    out.join(", ")
}

/// The Markdown table of every built-in command and subcommand, sorted by name.
pub fn markdown_table() -> String {
    let mut specs: Vec<&CmdSpec> = COMMANDS.iter().collect();
    specs.sort_by_key(|c| c.name);
    let mut out = String::from(
        "| command | keys | route | replies combined | flags |\n| --- | --- | --- | --- | --- |\n",
    );
    for c in specs {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} |",
            c.name.replace('|', " "),
            keys(&c.keys),
            route(&c.route).replace('|', "\\|"),
            policy(c),
            flags(c),
        );
    }
    out
}
