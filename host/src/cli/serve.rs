//! `provision serve` and `provision tokens ...`.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{ConfigArg, JsonArg, open, print_json, table};
use provision::model::format_time;

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Address to listen on (default: `serve.listen` in the config, else 127.0.0.1:8080)
    #[arg(long)]
    listen: Option<String>,
}

/// Serves the API and the pages until SIGINT or SIGTERM.
pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    // A server outlives its clients: a write to a peer that went away must be an error on that
    // connection, never a signal that ends the process (`main` restores SIGPIPE for pipelines).
    // SAFETY: before the runtime starts any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let host = open(&args.config)?;
    let listen = args.listen.unwrap_or_else(|| host.config.serve.listen.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(provision::api::serve(host, &listen))?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
pub enum TokensCommand {
    /// Create an API token acting as a user; it is printed once and stored only as a hash
    Create {
        #[command(flatten)]
        config: ConfigArg,
        /// The user the token acts as
        #[arg(long, short)]
        user: String,
        /// What it is for
        #[arg(long, default_value = "api")]
        name: String,
        /// Lifetime, e.g. `90d`; default: until revoked
        #[arg(long)]
        expires: Option<String>,
        #[command(flatten)]
        json: JsonArg,
    },
    /// List tokens (never their values)
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Revoke a token
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        /// The token's id (see `tokens list`)
        id: i64,
    },
}

pub fn tokens(command: TokensCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokensCommand::Create { config, user, name, expires, json } => {
            super::bounded("--name", &name, provision::limits::NAME)?;
            let mut host = open(&config)?;
            let expires_at = match expires {
                None => None,
                Some(text) => {
                    let span: jiff::Span = text.parse().map_err(|e| anyhow::anyhow!("--expires `{text}`: {e}"))?;
                    let duration = span.to_duration(jiff::SpanRelativeTo::days_are_24_hours())?;
                    Some(provision::model::now_ms() + duration.as_millis() as i64)
                }
            };
            let (id, token) = host.store.create_token(&user, &name, expires_at)?;
            if json.json {
                print_json(&serde_json::json!({ "id": id, "user": user, "token": token }))?;
            } else {
                println!("{token}");
                eprintln!(
                    "{}",
                    super::output::message(&format!("Token {id} for `{user}` created; it is shown only now."))
                );
            }
        }
        TokensCommand::List { config, json } => {
            let tokens = open(&config)?.store.tokens()?;
            if json.json {
                print_json(&tokens)?;
            } else {
                let mut t = table(&["ID", "USER", "NAME", "CREATED", "EXPIRES"]);
                for token in tokens {
                    t.row(vec![
                        token.id.to_string(),
                        token.login,
                        token.name,
                        format_time(token.created_at),
                        token.expires_at.map(format_time).unwrap_or_else(|| "never".into()),
                    ]);
                }
                println!("{}", t.render());
            }
        }
        TokensCommand::Revoke { config, id } => {
            open(&config)?.store.revoke_token(id)?;
            println!("Token {id} revoked.");
        }
    }
    Ok(ExitCode::SUCCESS)
}
