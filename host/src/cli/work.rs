//! `provision review ...` and `provision manual ...`: the work lists of reviewers and manual
//! provisioners, and their decisions. The acting user is `--user` (or `$PROVISION_USER`).

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::output::message;
use super::{ConfigArg, JsonArg, open, print_json, table};
use provision::app::{Principal, WorkAction};
use provision::host::Host;
use provision::model::Order;
use provision::operators::{Paging, WorkItem};

#[derive(Args, Clone)]
pub struct UserArg {
    /// The acting user; their permissions decide what they may do
    #[arg(long, short, env = "PROVISION_USER")]
    pub user: String,
}

#[derive(Args)]
pub struct Selection {
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    user: UserArg,
    /// Order ids; more than one needs the Bulk permission too
    #[arg(required = true)]
    orders: Vec<i64>,
    #[command(flatten)]
    json: JsonArg,
}

#[derive(Subcommand)]
pub enum ReviewCommand {
    /// Orders awaiting a review that the user may review
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        user: UserArg,
        /// Only this source entity type
        #[arg(long)]
        entity_type: Option<String>,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Approve orders: they go to Pending and the next job run fulfils them
    Approve {
        #[command(flatten)]
        selection: Selection,
        /// Why, kept in history
        #[arg(long)]
        comment: Option<String>,
    },
    /// Decline orders: closed, and not generated again until the desired state changes
    Decline {
        #[command(flatten)]
        selection: Selection,
        /// Why, kept in history
        #[arg(long)]
        comment: Option<String>,
    },
    /// Postpone orders: they keep waiting, with the comment in history
    Postpone {
        #[command(flatten)]
        selection: Selection,
        /// Why (required)
        #[arg(long, required = true)]
        comment: String,
    },
}

#[derive(Subcommand)]
pub enum ManualCommand {
    /// Transmitted orders to carry out by hand, with the suggested change
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        user: UserArg,
        /// Only this source entity type
        #[arg(long)]
        entity_type: Option<String>,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Confirm orders were carried out in the managed system: they go to Executed
    Confirm {
        #[command(flatten)]
        selection: Selection,
        /// A note, kept in history
        #[arg(long)]
        comment: Option<String>,
    },
    /// Report that orders could not be carried out: they go to Errored
    ReportError {
        #[command(flatten)]
        selection: Selection,
        /// What went wrong (required)
        #[arg(long, required = true)]
        message: String,
    },
}

fn print_items(items: &[WorkItem], why_header: &str, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&items);
    }
    if items.is_empty() {
        println!("Nothing to do.");
        return Ok(());
    }
    let mut t = table(&["ORDER", "ENTITY TYPE", "OWNER", "CHANGE", why_header, "SUGGESTED CHANGE"]);
    for item in items {
        let o = &item.order;
        let owner = if item.own { format!("{} (you: not yours to review)", o.owner) } else { o.owner.clone() };
        t.row(vec![
            o.id.to_string(),
            o.entity_type.clone(),
            owner,
            format!("{} {}", o.change.kind, o.resource_type),
            o.message.clone().unwrap_or_default(),
            item.suggestion.clone(),
        ]);
    }
    println!("{}", t.render());
    Ok(())
}

/// Prints what an action did, then routes and delivers the notifications it caused.
fn done(host: &mut Host, orders: &[Order], json: bool) -> anyhow::Result<ExitCode> {
    if json {
        print_json(
            &orders
                .iter()
                .map(|o| {
                    serde_json::json!({
                        "id": o.id,
                        "state": { "number": o.state.number(), "name": o.state.name() },
                    })
                })
                .collect::<Vec<_>>(),
        )?;
    } else {
        for o in orders {
            let line = format!("Order {}: {} {} for {} -> {}", o.id, o.change.kind, o.resource_type, o.owner, o.state);
            println!("{}", message(&line));
        }
    }
    let report = provision::app::notify_after_action(host)?;
    for problem in &report.problems {
        eprintln!("warning: {}", message(problem));
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses a comment over its limit before anything is opened.
fn comment_arg(flag: &'static str, comment: Option<&str>) -> anyhow::Result<()> {
    comment.map_or(Ok(()), |c| super::bounded(flag, c, provision::limits::COMMENT))
}

pub fn review(command: ReviewCommand) -> anyhow::Result<ExitCode> {
    let (selection, decision, comment) = match command {
        ReviewCommand::List { config, user, entity_type, json } => {
            let host = open(&config)?;
            let items = provision::review::list(&host.store, &user.user, entity_type.as_deref(), Paging::default())?;
            print_items(&items, "WHY A REVIEW", json.json)?;
            return Ok(ExitCode::SUCCESS);
        }
        ReviewCommand::Approve { selection, comment } => (selection, WorkAction::Approve, comment),
        ReviewCommand::Decline { selection, comment } => (selection, WorkAction::Decline, comment),
        ReviewCommand::Postpone { selection, comment } => (selection, WorkAction::Postpone, Some(comment)),
    };
    comment_arg("--comment", comment.as_deref())?;
    act(selection, decision, comment.as_deref())
}

/// Opens the host, acts as `--user` and prints what changed.
fn act(selection: Selection, action: WorkAction, text: Option<&str>) -> anyhow::Result<ExitCode> {
    let mut host = open(&selection.config)?;
    let who = Principal::of(&host, &selection.user.user)?;
    let orders = provision::app::act(&mut host, &who, &selection.orders, action, text)?;
    done(&mut host, &orders, selection.json.json)
}

pub fn manual(command: ManualCommand) -> anyhow::Result<ExitCode> {
    match command {
        ManualCommand::List { config, user, entity_type, json } => {
            let host = open(&config)?;
            let items = provision::manual::list(&host.store, &user.user, entity_type.as_deref(), Paging::default())?;
            print_items(&items, "NOTE", json.json)?;
            Ok(ExitCode::SUCCESS)
        }
        ManualCommand::Confirm { selection, comment } => {
            comment_arg("--comment", comment.as_deref())?;
            act(selection, WorkAction::Confirm, comment.as_deref())
        }
        ManualCommand::ReportError { selection, message } => {
            comment_arg("--message", Some(&message))?;
            act(selection, WorkAction::ReportError, Some(&message))
        }
    }
}
