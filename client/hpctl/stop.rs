//! `hpctl stop NAME`, `hpctl stop -g GROUP` or `hpctl stop -l SELECTOR`: stops, and prints the
//! names stopped.
//!
//! The Python hpctl's `stop NAME -g` (a `-g` with no value: NAME is a group) means the same as
//! `stop -g NAME`, so its scripts keep working.

use anyhow::anyhow;
use hydroplane_client::Client;

use crate::format::{Format, layout, print_names, print_text, print_yaml};
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
    /// Stop every process whose labels match this selector instead, in Kubernetes syntax
    /// (`tier=web,env in (dev,test),!canary`).
    // allow_hyphen_values: a selector starting with `-` (never a valid one) goes to the server,
    // which names the position of the mistake, rather than being taken for an unknown flag.
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR", allow_hyphen_values = true)]
    selector: Option<String>,
}

/// What to stop.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// One process, by name.
    Process(String),
    /// Every process of a group.
    Group(String),
    /// Every process whose labels match a selector.
    Selected(String),
}

impl StopArgs {
    /// What the arguments name, or why they name nothing.
    pub fn target(self) -> anyhow::Result<Target> {
        const USAGE: &str = "`hpctl stop NAME`, `hpctl stop -g GROUP` or `hpctl stop -l SELECTOR`";
        match (self.process_name, self.group, self.selector) {
            (Some(name), None, None) => Ok(Target::Process(name)),
            (None, Some(Some(group)), None) | (Some(group), Some(None), None) => Ok(Target::Group(group)),
            (None, None, Some(selector)) => Ok(Target::Selected(selector)),
            (Some(name), Some(Some(group)), None) => {
                Err(anyhow!("give a process name or -g GROUP, not both (got `{name}` and -g `{group}`)"))
            }
            (None, Some(None), None) => Err(anyhow!("-g needs a group: `hpctl stop -g GROUP`")),
            (None, None, None) => Err(anyhow!("give a process name, -g GROUP or -l SELECTOR: {USAGE}")),
            (name, group, Some(selector)) => {
                let other = match (name, group) {
                    (Some(name), _) => format!("`{name}`"),
                    (None, Some(Some(group))) => format!("-g `{group}`"),
                    (None, _) => "-g".to_owned(),
                };
                Err(anyhow!(
                    "give one of a process name, -g GROUP or -l SELECTOR (got {other} and -l `{selector}`)"
                ))
            }
        }
    }
}

/// Stops and prints.
pub async fn run(client: &Client, target: Target, format: Format) -> Result<(), RunError> {
    let stopped = match target {
        Target::Process(name) => client.stop_process(name).await?,
        Target::Group(group) => client.stop_group(group).await?,
        Target::Selected(selector) => client.stop_selected(selector).await?,
    };
    match format {
        Format::Json => print_pretty(&stopped),
        Format::Yaml => print_yaml(&stopped),
        Format::Name => print_names(stopped.iter().map(String::as_str)),
        Format::Table | Format::Wide => {
            let rows: Vec<Vec<String>> = stopped.iter().map(|name| vec![name.clone()]).collect();
            print_text(&layout(&["NAME".to_owned()], &rows))
        }
    }
}
