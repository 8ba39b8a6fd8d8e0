//! `lambda-runner`: the container CLI fakecloud is pointed at (`FAKECLOUD_CONTAINER_CLI`).
//! It answers the verbs fakecloud's Lambda backend uses and runs each function's
//! `bootstrap` natively; see `local_cloud::runner` for the protocol.

use std::process::ExitCode;

use local_cloud::runner::{self, RunnerError};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(Some(out)) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lambda-runner: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: &[String]) -> Result<Option<String>, RunnerError> {
    let verb = args.first().map(String::as_str).unwrap_or("");
    let rest = args.get(1..).unwrap_or_default();
    let last = || {
        rest.iter()
            .rev()
            .find(|a| !a.starts_with('-'))
            .cloned()
            .ok_or_else(|| RunnerError::Usage(format!("{verb} needs a container id")))
    };
    match verb {
        "info" | "version" | "--version" => Ok(Some(
            "lambda-runner: native Lambda runner for fakecloud (no containers)".into(),
        )),
        "create" => runner::create(rest).map(Some),
        "cp" => match rest {
            [src, dest] => runner::copy(src, dest).map(|_| None),
            _ => Err(RunnerError::Usage("cp SRC ID:PATH".into())),
        },
        "start" => {
            let id = last()?;
            let exe = std::env::current_exe().map_err(|source| RunnerError::Io {
                context: "locate lambda-runner".into(),
                source,
            })?;
            runner::start(&id, &exe).map(|_| Some(id))
        }
        "port" => match rest {
            [id, ..] => runner::port(id).map(Some),
            _ => Err(RunnerError::Usage("port ID [PORT]".into())),
        },
        "logs" => {
            let tail = rest
                .windows(2)
                .find(|w| w[0] == "--tail")
                .and_then(|w| w[1].parse().ok())
                .unwrap_or(200);
            runner::logs(&last()?, tail).map(Some)
        }
        "rm" => runner::remove(&last()?).map(|_| None),
        "serve" => {
            let id = last()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|source| RunnerError::Io {
                    context: "start the async runtime".into(),
                    source,
                })?;
            runtime.block_on(runner::serve(&id)).map(|_| None)
        }
        other => Err(RunnerError::Usage(format!(
            "`{other}` is not supported: lambda-runner answers only what fakecloud's Lambda backend asks (info, version, create, cp, start, port, logs, rm)"
        ))),
    }
}
