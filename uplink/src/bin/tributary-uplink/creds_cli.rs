//! `tributary-uplink creds …`: operator-mode credentials for the hub
//! without `nsc` (the work is the `tributary_creds` crate). `init` makes the
//! operator, the fleet's account and the devices' scoped signing key in a
//! directory; `device` issues one device's `.creds`; `refresh` re-signs the
//! account after an upgrade changed the device template. What is printed
//! names files and public keys, never a seed.

use anyhow::Context;
use std::path::{Path, PathBuf};
use tributary_creds::Fleet;
use tributary_creds::fleet::files;

/// The fleet directory when `--dir` is not given.
const DEFAULT_DIR: &str = "/etc/tributary/hub-creds";

/// `creds` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CredsCommand {
    /// Make an operator, the fleet's account and the devices' signing key in
    /// DIR (refused when DIR already holds keys): the operator and account
    /// JWTs, resolver.conf for the hub's nats-server configuration, the
    /// central user's uplink.creds, and the seeds in DIR/keys (mode 0600).
    Init {
        /// The directory to create or fill.
        dir: PathBuf,
        /// The operator's name in its JWT.
        #[arg(long, default_value = "tributary")]
        operator: String,
    },
    /// Issue the .creds file of a device: a user named after the device,
    /// which may use only the device's own subjects (cross/hub/device-user.conf).
    Device {
        /// The device id (`[agent] device` of its agent.toml).
        name: String,
        /// The fleet directory made by `creds init`.
        #[arg(long, env = "TRIBUTARY_CREDS_DIR", default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// Where to write the file (default: NAME.creds in the current
        /// directory); never overwritten.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Issue the .creds file of another central user (full permissions in
    /// the fleet's account: a second uplink host, the central command).
    Central {
        /// The user's name.
        name: String,
        /// The fleet directory made by `creds init`.
        #[arg(long, env = "TRIBUTARY_CREDS_DIR", default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// Where to write the file (default: NAME.creds in the current
        /// directory); never overwritten.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Sign the account JWT again with this program's device template and
    /// rewrite account.jwt and resolver.conf (then copy resolver.conf to the
    /// hub nodes and reload them); issued .creds stay valid.
    Refresh {
        /// The fleet directory made by `creds init`.
        #[arg(long, env = "TRIBUTARY_CREDS_DIR", default_value = DEFAULT_DIR)]
        dir: PathBuf,
    },
}

/// Runs a `creds` subcommand.
pub fn run(command: CredsCommand) -> anyhow::Result<()> {
    match command {
        CredsCommand::Init { dir, operator } => {
            let fleet = Fleet::generate(&operator).context("making the keys")?;
            let written = fleet
                .init_dir(&dir)
                .with_context(|| format!("writing the fleet directory {}", dir.display()))?;
            for path in &written {
                println!("wrote {}", path.display());
            }
            println!("account {}", fleet.account_public());
            println!("device signing key {}", fleet.signing_public());
            println!(
                "next: include {} in every hub node's nats-server configuration \
                 (config/examples/hub-operator.conf), keep {} offline, and issue each \
                 device with `tributary-uplink creds device --dir {} <device>`",
                dir.join(files::RESOLVER_CONF).display(),
                dir.join(files::OPERATOR_SEED).display(),
                dir.display()
            );
            Ok(())
        }
        CredsCommand::Device { name, dir, out } => {
            let fleet = load(&dir)?;
            let creds = fleet
                .device_creds(&name)
                .with_context(|| format!("issuing the credentials of device {name:?}"))?;
            write(&creds, out, &name)
        }
        CredsCommand::Central { name, dir, out } => {
            let fleet = load(&dir)?;
            write(&fleet.central_creds(&name), out, &name)
        }
        CredsCommand::Refresh { dir } => {
            let mut fleet = load(&dir)?;
            fleet.reissue_account().context("signing the account")?;
            for path in fleet
                .write_public(&dir)
                .with_context(|| format!("rewriting {}", dir.display()))?
            {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
    }
}

fn load(dir: &Path) -> anyhow::Result<Fleet> {
    Fleet::load_dir(dir).with_context(|| {
        format!(
            "reading the fleet directory {} (made by `tributary-uplink creds init`)",
            dir.display()
        )
    })
}

fn write(creds: &tributary_creds::Creds, out: Option<PathBuf>, name: &str) -> anyhow::Result<()> {
    let path = out.unwrap_or_else(|| PathBuf::from(format!("{name}.creds")));
    creds
        .write(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "wrote {} (user {name:?}; a secret: mode 0600)",
        path.display()
    );
    Ok(())
}
