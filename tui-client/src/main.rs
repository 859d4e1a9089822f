//! `one2one`: the terminal softphone. The engine and the TUI come with the
//! client issues; until then this binary only says so.

fn main() -> anyhow::Result<()> {
    eprintln!(
        "one2one: the terminal client is not built yet; use the web client served by one2one-server"
    );
    std::process::exit(2);
}
