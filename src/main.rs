//! The `doculearn` command: `serve`, `migrate`, `token`, `ingest`, and the hidden
//! `extract-worker` the daemon runs as its sandboxed extraction child.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use doculearn::config::Settings;
use doculearn::startup::{Application, Role};
use uuid::Uuid;

#[derive(Parser)]
#[command(
    name = "doculearn",
    version,
    about = "Turns uploaded documents into searchable vectors, with live progress"
)]
struct Cli {
    /// Settings file layered over config/default.toml (env DOCULEARN_* wins over both).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API, WebSockets, UI and workers.
    Serve {
        #[arg(long, value_enum, default_value = "all")]
        role: Role,
    },
    /// Apply the database migrations and exit.
    Migrate,
    /// Mint a bearer token with the configured secret.
    Token {
        #[arg(long)]
        user: Uuid,
        #[arg(long)]
        admin: bool,
        /// Lifetime: 90s, 30m, 1h, 7d (default: auth.token_ttl_secs).
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Search your documents through a running daemon: the best passages,
    /// with their document, page, score and a snippet with the query's
    /// words highlighted (bold on a terminal, [[...]] otherwise).
    Search {
        #[command(flatten)]
        client: ClientArgs,
        /// How many passages (1–50).
        #[arg(long, short, default_value_t = 5)]
        k: u32,
        /// hybrid (keyword and semantic fused), semantic or keyword.
        #[arg(long, default_value = "hybrid", value_parser = doculearn::search::Mode::NAMES)]
        mode: String,
        /// What to look for (several words are one query).
        #[arg(required = true)]
        query: Vec<String>,
    },
    /// Re-embed, through a running daemon, every document whose vectors are
    /// of another model than the configured one (an admin token: `doculearn
    /// token --admin`, or --user mints one), and follow
    /// it until search uses the configured model for all (exit status 1 if
    /// some could not be re-embedded). Safe to run again: it resumes.
    Reembed {
        #[command(flatten)]
        client: ClientArgs,
        /// Only this user's documents.
        #[arg(long)]
        of_user: Option<Uuid>,
        /// Queue the re-embeds and return at once.
        #[arg(long)]
        no_wait: bool,
        /// Stop waiting after this long (the jobs go on in the daemon).
        #[arg(long, default_value = "1h")]
        timeout: String,
    },
    /// Upload files through a running daemon and show live progress bars
    /// until each is completed or failed (exit status 1 if any failed).
    Ingest {
        #[command(flatten)]
        client: ClientArgs,
        /// Stop waiting after this long (the jobs go on in the daemon).
        #[arg(long, default_value = "1h")]
        timeout: String,
        /// A file you already uploaded: `existing` (default: say "already
        /// uploaded" and show that document's state), `replace` (process
        /// that document again) or `keep` (a second document).
        #[arg(long, value_parser = ["existing", "replace", "keep"], default_value = "existing")]
        on_duplicate: String,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Internal: the sandboxed extraction child (reads a file on stdin).
    #[command(hide = true)]
    ExtractWorker {
        #[arg(long)]
        name: String,
        #[arg(long)]
        content_type: String,
        #[arg(long)]
        limits: String,
        #[arg(long)]
        memory_mb: u64,
        #[arg(long)]
        cpu_secs: u64,
    },
    /// Internal: the sandboxed OCR child (one page of a file on stdin).
    #[command(hide = true)]
    OcrWorker {
        #[arg(long)]
        job: String,
        #[arg(long)]
        memory_mb: u64,
        #[arg(long)]
        cpu_secs: u64,
    },
}

fn parse_ttl(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("--ttl: “{s}” is not a duration like 90s, 30m, 1h or 7d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("--ttl: unknown unit “{unit}” (use s, m, h or d)")),
    };
    Ok(n * mult)
}

fn load(config: Option<&PathBuf>) -> Result<Settings, ExitCode> {
    Settings::load(config.map(PathBuf::as_path)).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::ExtractWorker {
        name,
        content_type,
        limits,
        memory_mb,
        cpu_secs,
    } = &cli.command
    {
        // No runtime, no logging: a small process that reads, extracts, answers.
        return match doculearn::pipeline::extract::worker_main(name, content_type, limits, *memory_mb, *cpu_secs) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("extract-worker: {e}");
                ExitCode::from(1)
            }
        };
    }
    if let Command::OcrWorker {
        job,
        memory_mb,
        cpu_secs,
    } = &cli.command
    {
        return match doculearn::pipeline::extract::ocr::worker_main(job, *memory_mb, *cpu_secs) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ocr-worker: {e}");
                ExitCode::from(1)
            }
        };
    }
    if let Command::Ingest {
        client,
        timeout,
        on_duplicate,
        files,
    } = cli.command
    {
        return ingest(cli.config.as_ref(), client, &timeout, on_duplicate, files);
    }
    if let Command::Search {
        client: c,
        k,
        mode,
        query,
    } = cli.command
    {
        let (server, token) = match client(cli.config.as_ref(), c, false, "search") {
            Ok(c) => c,
            Err(code) => return code,
        };
        let searched = client_run(
            "search",
            doculearn::ingest::search(&server, &token, &query.join(" "), k, &mode),
        );
        return searched.map_or_else(|code| code, |()| ExitCode::SUCCESS);
    }
    if let Command::Reembed {
        client,
        of_user,
        no_wait,
        timeout,
    } = cli.command
    {
        return reembed(cli.config.as_ref(), client, of_user, no_wait, &timeout);
    }
    let settings = match load(cli.config.as_ref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match cli.command {
        Command::Token { user, admin, ttl } => {
            let ttl = match ttl.as_deref().map(parse_ttl).transpose() {
                Ok(t) => t.unwrap_or(settings.auth.token_ttl_secs as i64),
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let minted = doculearn::http::auth::AuthKeys::from_settings(&settings.auth)
                .map_err(|e| e.to_string())
                .and_then(|keys| keys.try_mint(user, admin, ttl));
            match minted {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Migrate => run(async move {
            doculearn::telemetry::init(&settings.log);
            doculearn::startup::prepare_database(&settings).await?;
            println!("migrations applied");
            Ok(())
        }),
        Command::Serve { role } => run(async move {
            doculearn::telemetry::init(&settings.log);
            let app = Application::build(settings, role).await?;
            // Scripts and tests read this line to find the port.
            println!("doculearn listening on http://{}", app.local_addr());
            tracing::info!(addr = %app.local_addr(), ?role, "serving");
            app.run_until_stopped().await
        }),
        Command::ExtractWorker { .. }
        | Command::OcrWorker { .. }
        | Command::Ingest { .. }
        | Command::Search { .. }
        | Command::Reembed { .. } => {
            unreachable!("handled above")
        }
    }
}

/// The server and token of a client command (`ingest`, `search`,
/// `reembed`). Only `--user` (minting a token with the configured secret,
/// an admin's when `admin`) reads and checks the daemon's whole
/// configuration; otherwise a client needs nothing but a token.
fn client(config: Option<&PathBuf>, c: ClientArgs, admin: bool, command: &str) -> Result<(String, String), ExitCode> {
    let ClientArgs { server, token, user } = c;
    let server = match server {
        Some(s) => s,
        None => match Settings::client_listen(config.map(PathBuf::as_path)) {
            Ok(listen) => format!("http://{listen}"),
            Err(e) => {
                eprintln!("{e}");
                return Err(ExitCode::from(2));
            }
        },
    };
    let token = match (token, user) {
        (Some(t), _) => t,
        (None, Some(user)) => {
            let settings = load(config)?;
            let minted = doculearn::http::auth::AuthKeys::from_settings(&settings.auth)
                .map_err(|e| e.to_string())
                .and_then(|keys| keys.try_mint(user, admin, settings.auth.token_ttl_secs as i64));
            match minted {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("{e}");
                    return Err(ExitCode::from(2));
                }
            }
        }
        (None, None) => {
            eprintln!("{command}: give --token (or DOCULEARN_TOKEN), or --user to mint one with the configured secret");
            return Err(ExitCode::from(2));
        }
    };
    Ok((server, token))
}

fn reembed(config: Option<&PathBuf>, c: ClientArgs, of_user: Option<Uuid>, no_wait: bool, timeout: &str) -> ExitCode {
    let timeout = match parse_ttl(timeout) {
        Ok(t) if t > 0 => std::time::Duration::from_secs(t as u64),
        _ => {
            eprintln!("--timeout must be a positive duration such as 90s, 30m, 1h");
            return ExitCode::from(2);
        }
    };
    let (server, token) = match client(config, c, true, "reembed") {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client_run(
        "reembed",
        doculearn::ingest::reembed(&server, &token, of_user, !no_wait, timeout),
    ) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(code) => code,
    }
}

/// How a client command reaches the daemon: `--server`, and `--token` or `--user`.
#[derive(clap::Args)]
struct ClientArgs {
    /// The daemon (default: http:// and http.listen, 127.0.0.1:8000).
    #[arg(long, env = "DOCULEARN_SERVER")]
    server: Option<String>,
    /// Bearer token (e.g. from `doculearn token`).
    #[arg(long, env = "DOCULEARN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Instead of --token: mint one for this user with the configured secret.
    #[arg(long, conflicts_with = "token")]
    user: Option<Uuid>,
}

fn ingest(
    config: Option<&PathBuf>,
    c: ClientArgs,
    timeout: &str,
    on_duplicate: String,
    files: Vec<PathBuf>,
) -> ExitCode {
    let timeout = match parse_ttl(timeout) {
        Ok(t) if t > 0 => std::time::Duration::from_secs(t as u64),
        Ok(_) => {
            eprintln!("--timeout must be positive");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("{}", e.replace("--ttl", "--timeout"));
            return ExitCode::from(2);
        }
    };
    let (server, token) = match client(config, c, false, "ingest") {
        Ok(c) => c,
        Err(code) => return code,
    };
    let args = doculearn::ingest::IngestArgs {
        server,
        token,
        files,
        timeout,
        on_duplicate,
    };
    match client_run("ingest", doculearn::ingest::run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(code) => code,
    }
}

/// Runs a client command's future on a small runtime; an error is one line
/// "<command>: <reason>" and exit status 1.
fn client_run<T>(command: &str, fut: impl std::future::Future<Output = anyhow::Result<T>>) -> Result<T, ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::from(1)
        })?;
    runtime.block_on(fut).map_err(|e| {
        eprintln!("{command}: {e:#}");
        ExitCode::from(1)
    })
}

fn run(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("doculearn: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("30m"), Ok(1800));
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("7d"), Ok(604800));
        assert!(parse_ttl("1y").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
