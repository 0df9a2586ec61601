//! `provision users ...` and `provision profiles ...`: operators, their profiles and the
//! permission paths profiles hold.

use std::process::ExitCode;

use super::output::{Cell, message};
use super::{ConfigArg, InvalidInput, JsonArg, bounded, open, print_json, table};
use clap::Subcommand;
use provision::host::Host;
use provision::limits;
use provision::store::UserSpec;

/// Users and profiles the config lists are refused here, by the application layer.
fn not_from_config(host: &Host, table: &'static str, name: &str) -> anyhow::Result<()> {
    Ok(provision::app::not_from_config(host, table, name)?)
}

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Create a user, or update the fields given
    Add {
        #[command(flatten)]
        config: ConfigArg,
        /// Unique login
        login: String,
        /// Name to show
        #[arg(long)]
        name: Option<String>,
        /// E-mail address for notifications
        #[arg(long)]
        email: Option<String>,
        /// The identity this user is, as ENTITY_TYPE:KEY (nobody reviews their own orders)
        #[arg(long)]
        identity: Option<String>,
        /// Profiles to give (repeatable)
        #[arg(long)]
        profile: Vec<String>,
    },
    /// List users with their profiles and permissions
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Give profiles to a user
    Grant {
        #[command(flatten)]
        config: ConfigArg,
        /// The user
        login: String,
        /// Profiles
        #[arg(required = true)]
        profiles: Vec<String>,
    },
    /// Take profiles from a user
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        /// The user
        login: String,
        /// Profiles
        #[arg(required = true)]
        profiles: Vec<String>,
    },
    /// Remove a user (history keeps their login)
    Remove {
        #[command(flatten)]
        config: ConfigArg,
        /// The user
        login: String,
    },
}

#[derive(Subcommand)]
pub enum ProfilesCommand {
    /// Create a profile, or update its description
    Add {
        #[command(flatten)]
        config: ConfigArg,
        /// Name
        name: String,
        /// What it is for
        #[arg(long)]
        description: Option<String>,
    },
    /// List profiles with their permission paths
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Add permission paths to a profile, e.g.
    /// /Custom/ProvisioningPolicy/ReviewProvisioning/Directory_User
    ///
    /// Holding a path, or any parent of it, allows the action; only the exact path receives
    /// the notifications.
    Allow {
        #[command(flatten)]
        config: ConfigArg,
        /// The profile
        name: String,
        /// Permission paths
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Remove permission paths from a profile
    Disallow {
        #[command(flatten)]
        config: ConfigArg,
        /// The profile
        name: String,
        /// Permission paths
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Remove a profile
    Remove {
        #[command(flatten)]
        config: ConfigArg,
        /// The profile
        name: String,
    },
}

fn identity(text: Option<String>) -> anyhow::Result<Option<(String, String)>> {
    text.map(|t| match t.split_once(':') {
        Some((et, key)) if !et.is_empty() && !key.is_empty() => Ok((et.to_string(), key.to_string())),
        _ => anyhow::bail!("--identity must be ENTITY_TYPE:KEY, e.g. Directory_User:alice"),
    })
    .transpose()
}

pub fn users(command: UsersCommand) -> anyhow::Result<ExitCode> {
    match command {
        UsersCommand::Add { config, login, name, email, identity: id, profile } => {
            bounded("the login", &login, limits::NAME)?;
            if let Some(name) = &name {
                bounded("--name", name, limits::NAME)?;
            }
            if let Some(email) = &email {
                bounded("--email", email, limits::EMAIL)?;
            }
            if let Some(email) = &email {
                email.parse::<lettre::Address>().map_err(|e| anyhow::anyhow!("--email `{email}`: {e}"))?;
            }
            let identity = identity(id)?;
            let mut host = open(&config)?;
            let user = UserSpec { login: login.clone(), display_name: name, email, identity };
            provision::app::save_user(&mut host, &user, &profile)?;
            println!("{}", message(&format!("User `{login}` saved.")));
        }
        UsersCommand::List { config, json } => {
            let host = open(&config)?;
            let users = host.store.users()?;
            if json.json {
                print_json(&users)?;
            } else {
                let mut t = table(&["LOGIN", "NAME", "E-MAIL", "IDENTITY", "PROFILES", "PERMISSIONS"]);
                for u in users {
                    t.row(vec![
                        Cell::from(u.login),
                        u.display_name.into(),
                        u.email.unwrap_or_default().into(),
                        u.identity.map(|(et, key)| format!("{et}:{key}")).unwrap_or_default().into(),
                        u.profiles.join(", ").into(),
                        Cell::Lines(u.permissions),
                    ]);
                }
                println!("{}", t.render());
            }
        }
        UsersCommand::Grant { config, login, profiles } => {
            let mut host = open(&config)?;
            provision::app::grant(&mut host, &login, &profiles)?;
            println!("{}", message(&format!("User `{login}` holds {}.", profiles.join(", "))));
        }
        UsersCommand::Revoke { config, login, profiles } => {
            let mut host = open(&config)?;
            let removed = provision::app::revoke(&mut host, &login, &profiles)?;
            println!("{}", message(&format!("Took {removed} profile(s) from `{login}`.")));
        }
        UsersCommand::Remove { config, login } => {
            let mut host = open(&config)?;
            provision::app::remove_user(&mut host, &login)?;
            println!("{}", message(&format!("User `{login}` removed.")));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn profiles(command: ProfilesCommand) -> anyhow::Result<ExitCode> {
    match command {
        ProfilesCommand::Add { config, name, description } => {
            bounded("the profile name", &name, limits::NAME)?;
            if let Some(description) = &description {
                bounded("--description", description, limits::DESCRIPTION)?;
            }
            let mut host = open(&config)?;
            not_from_config(&host, "profiles", &name)?;
            host.store.upsert_profile(&name, description.as_deref())?;
            println!("{}", message(&format!("Profile `{name}` saved.")));
        }
        ProfilesCommand::List { config, json } => {
            let profiles = open(&config)?.store.profiles()?;
            if json.json {
                print_json(&profiles)?;
            } else {
                let mut t = table(&["PROFILE", "DESCRIPTION", "PERMISSIONS"]);
                for p in profiles {
                    t.row(vec![Cell::from(p.name), p.description.into(), Cell::Lines(p.permissions)]);
                }
                println!("{}", t.render());
            }
        }
        ProfilesCommand::Allow { config, name, paths } => {
            for path in &paths {
                bounded("a permission path", path, limits::PERMISSION_PATH)?;
            }
            let mut host = open(&config)?;
            not_from_config(&host, "profiles", &name)?;
            // Every path is checked before any is added: all or nothing.
            let mut warnings = Vec::new();
            for path in &paths {
                match provision::permissions::validate(path, host.config.entity_types.keys()) {
                    Ok(warning) => warnings.extend(warning),
                    Err(problem) => return Err(InvalidInput(problem).into()),
                }
            }
            for warning in &warnings {
                eprintln!("warning: {}", message(warning));
            }
            host.store.allow(&name, &paths)?;
            println!("{}", message(&format!("Profile `{name}` allows {}.", paths.join(", "))));
        }
        ProfilesCommand::Disallow { config, name, paths } => {
            let mut host = open(&config)?;
            not_from_config(&host, "profiles", &name)?;
            let removed = host.store.disallow(&name, &paths)?;
            println!("{}", message(&format!("Removed {removed} path(s) from `{name}`.")));
        }
        ProfilesCommand::Remove { config, name } => {
            let mut host = open(&config)?;
            not_from_config(&host, "profiles", &name)?;
            if !host.store.remove_profile(&name)? {
                anyhow::bail!("there is no profile `{name}`");
            }
            println!("{}", message(&format!("Profile `{name}` removed.")));
        }
    }
    Ok(ExitCode::SUCCESS)
}
