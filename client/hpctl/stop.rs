//! `hpctl stop NAME` or `hpctl stop -g GROUP`: stops, and prints the names stopped.
//!
//! The Python hpctl's `stop NAME -g` (a `-g` with no value: NAME is a group) means the same as
//! `stop -g NAME`, so its scripts keep working.

use anyhow::anyhow;
use hydroplane_client::Client;

use crate::output::{RunError, print_pretty};

/// Arguments of `hpctl stop`.
#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// The process to stop (or, with a bare -g, the group).
    #[arg(value_name = "NAME")]
    process_name: Option<String>,
    /// Stop every process of this group instead.
    // An optional value: `-g GROUP`, or the Python hpctl's `NAME -g`.
    #[arg(short, long, value_name = "GROUP", num_args = 0..=1)]
    group: Option<Option<String>>,
}

/// What to stop.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// One process, by name.
    Process(String),
    /// Every process of a group.
    Group(String),
}

impl StopArgs {
    /// What the arguments name, or why they name nothing.
    pub fn target(self) -> anyhow::Result<Target> {
        match (self.process_name, self.group) {
            (Some(name), None) => Ok(Target::Process(name)),
            (None, Some(Some(group))) | (Some(group), Some(None)) => Ok(Target::Group(group)),
            (Some(name), Some(Some(group))) => {
                Err(anyhow!("give a process name or -g GROUP, not both (got `{name}` and -g `{group}`)"))
            }
            (None, Some(None)) => Err(anyhow!("-g needs a group: `hpctl stop -g GROUP`")),
            (None, None) => {
                Err(anyhow!("give a process name or -g GROUP: `hpctl stop NAME` or `hpctl stop -g GROUP`"))
            }
        }
    }
}

/// Stops and prints.
pub async fn run(client: &Client, target: Target) -> Result<(), RunError> {
    let stopped = match target {
        Target::Process(name) => client.stop_process(name).await?,
        Target::Group(group) => client.stop_group(group).await?,
    };
    print_pretty(&stopped)
}
