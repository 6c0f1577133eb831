//! README's per-command table is the command model's own: this test fails when they
//! disagree. `UPDATE_README=1 cargo test --test readme` rewrites the table from the model.

const BEGIN: &str = "<!-- command table: generated from src/command/table.rs -->\n";
const END: &str = "<!-- end of command table -->\n";

#[test]
fn readme_command_table_matches_the_command_model() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let start = readme
        .find(BEGIN)
        .expect("README has the command table markers")
        + BEGIN.len();
    let end = start
        + readme[start..]
            .find(END)
            .expect("README has the end marker");
    let generated = slotgate::command::doc::markdown_table();
    if std::env::var_os("UPDATE_README").is_some() {
        let updated = format!("{}{}{}", &readme[..start], generated, &readme[end..]);
        std::fs::write(path, updated).unwrap();
        return;
    }
    let current = &readme[start..end];
    if current != generated {
        let diff: Vec<String> = generated
            .lines()
            .filter(|l| !current.lines().any(|c| c == *l))
            .take(10)
            .map(String::from)
            .collect();
        panic!(
            "README's command table differs from the command model; run \
             `UPDATE_README=1 cargo test --test readme`. Rows the model has and README lacks:\n{}",
            diff.join("\n")
        );
    }
}
