use clap::Parser as _;
use one2one_bench::{Args, run};

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,webrtc=error,rtc=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let json = args.json;
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("one2one-bench: tokio runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(run(args)) {
        Ok(report) => {
            if json {
                match serde_json::to_string(&report) {
                    Ok(j) => println!("{j}"),
                    Err(e) => eprintln!("one2one-bench: report: {e}"),
                }
            } else {
                print!("{}", report.text());
            }
            if report.media_ok {
                std::process::ExitCode::SUCCESS
            } else {
                eprintln!("one2one-bench: not every call carried video and audio both ways within the loss limit");
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("one2one-bench: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
