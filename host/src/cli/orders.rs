//! `provision orders ...`: list, show and retry orders.

use std::process::ExitCode;

use clap::Subcommand;

use super::work::UserArg;
use super::{ConfigArg, JsonArg, open, output};
use provision::app::{Principal, RetrySelection};
use provision::model::ProvisioningState;
use provision::store::OrderFilter;

#[derive(Subcommand)]
pub enum OrdersCommand {
    /// List orders, oldest first
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Only orders in this state: a number 0-8 or a name such as `pending` (repeatable)
        #[arg(long, short)]
        state: Vec<ProvisioningState>,
        /// Only orders of this resource type (repeatable)
        #[arg(long)]
        resource_type: Vec<String>,
        /// Only orders owned by this identity key
        #[arg(long)]
        owner: Option<String>,
        /// At most this many
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Show one order and its history
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// The order's id
        id: i64,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Retry Errored orders (→ Pending, with a fresh retry budget): the given ids, or every
    /// Errored order of the given resource types
    #[command(
        after_help = "Examples:\n  provision orders retry 12 13 --user ops\n  provision orders retry --state errored --resource-type SaaS_Account --user ops"
    )]
    Retry {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        user: UserArg,
        /// Order ids
        #[arg(conflicts_with_all = ["state", "resource_type"], required_unless_present = "state")]
        orders: Vec<i64>,
        /// Select by state instead (only `errored` can be retried)
        #[arg(long, requires = "resource_type")]
        state: Option<ProvisioningState>,
        /// With --state: the resource types (repeatable)
        #[arg(long)]
        resource_type: Vec<String>,
        #[command(flatten)]
        json: JsonArg,
    },
}

pub fn run(command: OrdersCommand) -> anyhow::Result<ExitCode> {
    match command {
        OrdersCommand::List { config, state, resource_type, owner, limit, json } => {
            let host = open(&config)?;
            let filter =
                OrderFilter { states: state, resource_types: resource_type, owner, limit, ..OrderFilter::default() };
            output::orders(&host.store.orders(&filter)?, json.json)?;
        }
        OrdersCommand::Show { config, id, json } => {
            let host = open(&config)?;
            output::order(&host.store.order(id)?, &host.store.history(id)?, json.json)?;
        }
        OrdersCommand::Retry { config, user, orders, state, resource_type, json } => {
            let selection = match state {
                None => RetrySelection::Orders(orders),
                Some(ProvisioningState::Errored) => RetrySelection::Errored { resource_types: resource_type },
                Some(other) => anyhow::bail!("only Errored orders can be retried, not {other}"),
            };
            let mut host = open(&config)?;
            let who = Principal::of(&host, &user.user)?;
            let retried = provision::app::retry(&mut host, &who, selection)?;
            if json.json {
                output::orders(&retried, true)?;
            } else {
                println!("{} orders back to Pending; the next job run fulfils them.", retried.len());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
