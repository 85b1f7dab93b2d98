//! Experiment plans (`experiments/*.toml`): the runs behind one paper artifact, their seeds,
//! and the paper's values they are compared with.
//!
//! A plan names its runs; each run is a set of training-config keys (the keys of
//! `config.toml`, see the README) over the plan's shared `[config]`, plus the two logging
//! options that do not change results (`log_grads`, `checkpoint_steps`). Runs that share a
//! `row` form one line of the paper's table (the three single-task models of Table 3's
//! "LSTM (STL)" line). A run expands into one run directory per seed,
//! `<root>/<plan>/<run>/seed-<k>`, trained with seed `k`. A run that another plan already
//! trains (Figure 4's models are Figure 3's and Table 3's) says so with
//! `same_as = "<plan>/<run>"`: its seeds are that run's directories, trained once by that
//! plan's sweep (this plan's sweep lists them but leaves them to it, so that they are
//! trained with their own plan's logging options), and a sweep or report that finds their
//! `config.toml` different from what this plan asks for stops, naming the key.
//!
//! ```toml
//! name = "table3"
//! title = "Table 3: single-task and multi-task models"
//! seeds = 3
//! [config]
//! hidden = 300
//! [[run]]
//! name = "sc-lstm"
//! row = "SC-LSTM"
//! config = { model = "sc-lstm" }
//! options = { log_grads = 100 }
//! paper = { source = "Table 3, line 4", ner = 89.96, chunk = 96.04, pos = 95.51 }
//! [[compare]]
//! row = "SC-LSTM"
//! against = ["LSTM-s"]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;

/// Seeds per run when a plan does not say.
pub const DEFAULT_SEEDS: usize = 3;

/// Training-config keys that may differ between a run directory and its plan: they change
/// how fast a run goes or where it reads the shipped data from, not what it computes.
pub const IGNORED_KEYS: [&str; 3] = ["threads", "backend", "datasets"];

/// Options of a run that are not part of its configuration (they change no result).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunLogging {
    /// `--log-grads N`: gradient statistics every N steps.
    pub log_grads: Option<u64>,
    /// `--checkpoint-steps N`: `last.safetensors` every N steps.
    pub checkpoint_steps: Option<u64>,
}

impl RunLogging {
    /// These options with `over`'s set values taking precedence.
    fn merged(&self, over: &RunLogging) -> RunLogging {
        RunLogging {
            log_grads: over.log_grads.or(self.log_grads),
            checkpoint_steps: over.checkpoint_steps.or(self.checkpoint_steps),
        }
    }
}

/// The paper's figures for one run (or a reference line), with where they come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaperValues {
    /// Table and line (or figure) the values are read from.
    pub source: String,
    /// Score per task (F1 or accuracy, %).
    #[serde(flatten)]
    pub scores: BTreeMap<String, f64>,
}

/// One run of a plan (before expansion into seeds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanRun {
    /// Directory name of the run (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// Table row the run belongs to (default: its name).
    #[serde(default)]
    pub row: Option<String>,
    /// Training-config keys of this run over the plan's `[config]`.
    #[serde(default)]
    pub config: toml::Table,
    /// Logging options over the plan's `[options]`.
    #[serde(default)]
    pub options: RunLogging,
    /// The paper's values for this run.
    #[serde(default)]
    pub paper: Option<PaperValues>,
    /// `<plan>/<run>`: another plan's run with this run's configuration, whose seed
    /// directories this run reads instead of training its own.
    #[serde(default)]
    pub same_as: Option<String>,
}

impl PlanRun {
    /// The table row of this run.
    pub fn row(&self) -> &str {
        self.row.as_deref().unwrap_or(&self.name)
    }

    /// The directory holding this run's seeds under `root`: `<root>/<plan>/<run>`, or the
    /// run it is the same as.
    fn dir(&self, root: &Path, plan: &str) -> PathBuf {
        match &self.same_as {
            Some(other) => other
                .split('/')
                .fold(root.to_path_buf(), |d, part| d.join(part)),
            None => root.join(plan).join(&self.name),
        }
    }
}

/// A comparison the report tests: one row against others, task by task (Welch's t-test).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Comparison {
    /// The row under test (e.g. `SC-LSTM`).
    pub row: String,
    /// The rows it is compared with.
    pub against: Vec<String>,
}

/// An experiment plan as written in `experiments/*.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Name of the plan (the first directory level under the runs root).
    pub name: String,
    /// What the plan reproduces.
    pub title: String,
    /// Seeds per run (1..=seeds).
    #[serde(default = "default_seeds")]
    pub seeds: usize,
    /// Training-config keys shared by every run.
    #[serde(default)]
    pub config: toml::Table,
    /// Logging options shared by every run.
    #[serde(default)]
    pub options: RunLogging,
    /// The runs.
    #[serde(rename = "run")]
    pub runs: Vec<PlanRun>,
    /// Rows compared by significance test.
    #[serde(default)]
    pub compare: Vec<Comparison>,
    /// Reference lines drawn in the task-group figure (Figure 4's single-task lines).
    #[serde(default)]
    pub reference: Option<PaperValues>,
}

fn default_seeds() -> usize {
    DEFAULT_SEEDS
}

/// One run directory a plan asks for: a run at one seed.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    /// Plan name.
    pub plan: String,
    /// Run name.
    pub run: String,
    /// Table row.
    pub row: String,
    /// Seed (1-based).
    pub seed: u64,
    /// `<root>/<plan>/<run>/seed-<seed>`.
    pub dir: PathBuf,
    /// The full training configuration, seed included.
    pub config: TrainConfig,
    /// Logging options.
    pub logging: RunLogging,
    /// `<plan>/<run>` when the directory is another plan's run (`same_as`): that plan's
    /// sweep trains it.
    pub same_as: Option<String>,
}

impl RunSpec {
    /// `<run>/seed-<k>`: the run's name inside its plan.
    pub fn id(&self) -> String {
        format!("{}/seed-{}", self.run, self.seed)
    }

    /// Where a sweep writes the run's output: `logs/<run>-seed-<k>.log` in the plan
    /// directory holding the run directory, so that a run shared by two plans
    /// (`same_as`) has one log whichever plan's sweep trains it.
    pub fn log_path(&self) -> PathBuf {
        let run_dir = self.dir.parent().unwrap_or(&self.dir);
        let run = run_dir
            .file_name()
            .map_or_else(|| self.run.clone(), |n| n.to_string_lossy().into_owned());
        let plan_dir = run_dir.parent().unwrap_or(run_dir);
        plan_dir
            .join("logs")
            .join(format!("{run}-seed-{}.log", self.seed))
    }

    /// The configuration file a fresh start reads: `<root>/<plan>/<run>/seed-<k>.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.with_extension("toml")
    }
}

/// What a sweep may change in every run of a plan (quick looks at a real plan).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--max-sentences N` for every run.
    pub max_sentences: Option<usize>,
}

impl Plan {
    /// Reads and checks a plan: unique run names usable as directory names, and every run's
    /// configuration valid. Errors name the file and the run.
    pub fn load(path: &Path) -> anyhow::Result<Plan> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading plan {}", path.display()))?;
        let plan: Plan =
            toml::from_str(&text).with_context(|| format!("parsing plan {}", path.display()))?;
        plan.check()
            .with_context(|| format!("plan {}", path.display()))?;
        Ok(plan)
    }

    fn check(&self) -> anyhow::Result<()> {
        if !is_dir_name(&self.name) {
            bail!("`name` = {:?} is not a usable directory name", self.name);
        }
        if self.seeds == 0 {
            bail!("`seeds` must be at least 1");
        }
        if self.runs.is_empty() {
            bail!("no [[run]]");
        }
        for (i, r) in self.runs.iter().enumerate() {
            if !is_dir_name(&r.name) {
                bail!("run {:?}: not a usable directory name", r.name);
            }
            if self.runs[..i].iter().any(|o| o.name == r.name) {
                bail!("run {:?} is listed twice", r.name);
            }
            if let Some(other) = &r.same_as {
                let parts: Vec<&str> = other.split('/').collect();
                if parts.len() != 2 || !parts.iter().all(|p| is_dir_name(p)) {
                    bail!(
                        "run {:?}: `same_as` = {other:?} is not `<plan>/<run>`",
                        r.name
                    );
                }
                if parts == [self.name.as_str(), r.name.as_str()] {
                    bail!("run {:?}: `same_as` names the run itself", r.name);
                }
            }
            let c = self
                .run_config(r, 1, &Overrides::default())
                .with_context(|| format!("run {:?}", r.name))?;
            if c.model == crate::config::Family::Stl && c.tasks.len() != 1 {
                bail!(
                    "run {:?}: an STL run trains one task (one run per task)",
                    r.name
                );
            }
        }
        let rows: Vec<&str> = self.runs.iter().map(PlanRun::row).collect();
        for c in &self.compare {
            for row in std::iter::once(&c.row).chain(&c.against) {
                if !rows.contains(&row.as_str()) {
                    bail!("[[compare]] names row {row:?}, which no run has");
                }
            }
        }
        Ok(())
    }

    /// The training configuration of `run` at `seed`: defaults, then the plan's `[config]`,
    /// then the run's `config`, then the overrides.
    pub fn run_config(
        &self,
        run: &PlanRun,
        seed: u64,
        overrides: &Overrides,
    ) -> anyhow::Result<TrainConfig> {
        let mut table = self.config.clone();
        for (k, v) in &run.config {
            table.insert(k.clone(), v.clone());
        }
        for key in ["seed", "max_sentences"] {
            if table.contains_key(key) {
                bail!("`{key}` is set by the sweep, not by a plan");
            }
        }
        let mut c: TrainConfig = table
            .try_into()
            .context("not a valid training configuration")?;
        c.seed = seed;
        if overrides.max_sentences.is_some() {
            c.max_sentences = overrides.max_sentences;
        }
        c.validate()?;
        Ok(c)
    }

    /// Every run directory of the plan under `root`, seeds `1..=seeds` (the plan's seeds
    /// when `None`), runs in plan order and seeds within each run.
    pub fn expand(
        &self,
        root: &Path,
        seeds: Option<usize>,
        overrides: &Overrides,
    ) -> anyhow::Result<Vec<RunSpec>> {
        let seeds = seeds.unwrap_or(self.seeds);
        let mut out = Vec::new();
        for run in &self.runs {
            for seed in 1..=seeds as u64 {
                out.push(RunSpec {
                    plan: self.name.clone(),
                    run: run.name.clone(),
                    row: run.row().to_string(),
                    seed,
                    dir: run.dir(root, &self.name).join(format!("seed-{seed}")),
                    config: self.run_config(run, seed, overrides)?,
                    logging: self.options.merged(&run.options),
                    same_as: run.same_as.clone(),
                });
            }
        }
        Ok(out)
    }

    /// The specs of the runs named in `names`, in that order (every spec when `names` is
    /// empty). Refuses a name the plan does not have, listing the ones it has.
    pub fn only(&self, specs: Vec<RunSpec>, names: &[String]) -> anyhow::Result<Vec<RunSpec>> {
        if names.is_empty() {
            return Ok(specs);
        }
        if let Some(unknown) = names.iter().find(|n| self.run(n).is_none()) {
            let known: Vec<&str> = self.runs.iter().map(|r| r.name.as_str()).collect();
            anyhow::bail!(
                "--only: plan `{}` has no run `{unknown}` (its runs: {})",
                self.name,
                known.join(", ")
            );
        }
        let mut out: Vec<RunSpec> = Vec::new();
        for name in names {
            if !out.iter().any(|s| &s.run == name) {
                out.extend(specs.iter().filter(|s| &s.run == name).cloned());
            }
        }
        Ok(out)
    }

    /// Keeps the specs of the given seeds (all when `seeds` is empty), e.g. to train only
    /// the seeds another machine has not.
    ///
    /// # Errors
    /// A seed of no spec (0, or beyond the seeds expanded), naming the flag.
    pub fn only_seeds(&self, specs: Vec<RunSpec>, seeds: &[u64]) -> anyhow::Result<Vec<RunSpec>> {
        if let Some(missing) = seeds.iter().find(|&&k| !specs.iter().any(|s| s.seed == k)) {
            let most = specs.iter().map(|s| s.seed).max().unwrap_or(0);
            anyhow::bail!(
                "--only-seeds: plan `{}` has no seed {missing} here (seeds 1 to {most}; \
                 --seeds raises the count)",
                self.name
            );
        }
        Ok(specs
            .into_iter()
            .filter(|s| seeds.is_empty() || seeds.contains(&s.seed))
            .collect())
    }

    /// The run named `name`.
    pub fn run(&self, name: &str) -> Option<&PlanRun> {
        self.runs.iter().find(|r| r.name == name)
    }

    /// Table rows in plan order, each once.
    pub fn rows(&self) -> Vec<String> {
        let mut rows: Vec<String> = Vec::new();
        for r in &self.runs {
            if !rows.iter().any(|x| x == r.row()) {
                rows.push(r.row().to_string());
            }
        }
        rows
    }
}

/// Keys in which a run directory's configuration differs from what its plan asks for,
/// as `key: plan value ≠ run value` (ignoring [`IGNORED_KEYS`]; the embeddings are compared
/// by file name, so that a copy of the shipped vectors elsewhere still matches).
pub fn config_differences(expected: &TrainConfig, found: &TrainConfig) -> Vec<String> {
    let table = |c: &TrainConfig| -> toml::Table {
        let mut t = toml::Table::try_from(c).expect("internal: a config serializes");
        for k in IGNORED_KEYS {
            t.remove(k);
        }
        let name = c
            .embeddings
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        t.insert("embeddings".into(), toml::Value::String(name));
        t
    };
    let (a, b) = (table(expected), table(found));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let show =
                |v: Option<&toml::Value>| v.map_or("(absent)".to_string(), |v| v.to_string());
            format!("{k}: plan {} ≠ run {}", show(a.get(k)), show(b.get(k)))
        })
        .collect()
}

fn is_dir_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = r#"
name = "t"
title = "test plan"
seeds = 2
[config]
hidden = 16
epochs = 3
[options]
checkpoint_steps = 50
[[run]]
name = "stl-ner"
row = "STL"
config = { model = "stl", tasks = ["ner"] }
paper = { source = "Table 3, line 1", ner = 89.39 }
[[run]]
name = "sc"
row = "SC-LSTM"
config = { model = "sc-lstm", hidden = 32 }
options = { log_grads = 10 }
[[compare]]
row = "SC-LSTM"
against = ["STL"]
"#;

    fn parse(text: &str) -> anyhow::Result<Plan> {
        let p: Plan = toml::from_str(text)?;
        p.check()?;
        Ok(p)
    }

    #[test]
    fn runs_expand_into_seed_directories_with_merged_configs() {
        let p = parse(PLAN).unwrap();
        let specs = p
            .expand(Path::new("runs"), None, &Overrides::default())
            .unwrap();
        let ids: Vec<String> = specs.iter().map(RunSpec::id).collect();
        assert_eq!(
            ids,
            ["stl-ner/seed-1", "stl-ner/seed-2", "sc/seed-1", "sc/seed-2"]
        );
        assert_eq!(specs[3].dir, Path::new("runs/t/sc/seed-2"));
        assert_eq!(specs[3].config_path(), Path::new("runs/t/sc/seed-2.toml"));
        assert_eq!((specs[0].config.hidden, specs[2].config.hidden), (16, 32));
        assert_eq!((specs[1].config.seed, specs[1].config.epochs), (2, 3));
        assert_eq!(specs[0].row, "STL");
        assert_eq!(specs[2].logging.log_grads, Some(10));
        assert_eq!(specs[2].logging.checkpoint_steps, Some(50));
        assert_eq!(specs[0].logging.log_grads, None);
        let one = p
            .expand(
                Path::new("r"),
                Some(1),
                &Overrides {
                    max_sentences: Some(20),
                },
            )
            .unwrap();
        assert_eq!(one.len(), 2);
        assert_eq!(one[0].config.max_sentences, Some(20));
        assert_eq!(p.rows(), ["STL", "SC-LSTM"]);
        assert_eq!(
            p.run("stl-ner").unwrap().paper.as_ref().unwrap().scores["ner"],
            89.39
        );
    }

    #[test]
    fn bad_plans_are_refused_naming_what_is_wrong() {
        let cases = [
            (PLAN.replace("hidden = 32", "hiden = 32"), "hiden"),
            (PLAN.replace("\"sc\"", "\"stl-ner\""), "listed twice"),
            (
                PLAN.replace("name = \"sc\"", "name = \"a/b\""),
                "directory name",
            ),
            (
                PLAN.replace("against = [\"STL\"]", "against = [\"LSTM-x\"]"),
                "LSTM-x",
            ),
            (
                PLAN.replace("tasks = [\"ner\"]", "tasks = [\"ner\", \"pos\"]"),
                "one task",
            ),
            (PLAN.replace("epochs = 3", "seed = 3"), "set by the sweep"),
            (PLAN.replace("seeds = 2", "seeds = 0"), "seeds"),
        ];
        for (text, needle) in cases {
            let err = format!("{:#}", parse(&text).unwrap_err());
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
        }
    }

    #[test]
    fn a_run_the_same_as_another_plans_reads_that_runs_seed_directories() {
        let text = PLAN.replace(
            "options = { log_grads = 10 }",
            "options = { log_grads = 10 }\nsame_as = \"table3/sc-lstm\"",
        );
        let p = parse(&text).unwrap();
        let specs = p
            .expand(Path::new("runs"), None, &Overrides::default())
            .unwrap();
        assert_eq!(specs[2].dir, Path::new("runs/table3/sc-lstm/seed-1"));
        assert_eq!(specs[2].id(), "sc/seed-1");
        assert_eq!(specs[2].same_as.as_deref(), Some("table3/sc-lstm"));
        assert_eq!(
            specs[2].log_path(),
            Path::new("runs/table3/logs/sc-lstm-seed-1.log")
        );
        assert_eq!(
            (specs[0].dir.as_path(), specs[0].same_as.as_deref()),
            (Path::new("runs/t/stl-ner/seed-1"), None)
        );
        assert_eq!(
            specs[0].log_path(),
            Path::new("runs/t/logs/stl-ner-seed-1.log")
        );
        for (same_as, needle) in [
            ("table3", "not `<plan>/<run>`"),
            ("table3/sc/seed-1", "not `<plan>/<run>`"),
            ("../sc", "not `<plan>/<run>`"),
            ("t/sc", "the run itself"),
        ] {
            let text = PLAN.replace(
                "options = { log_grads = 10 }",
                &format!("options = {{ log_grads = 10 }}\nsame_as = {same_as:?}"),
            );
            let err = format!("{:#}", parse(&text).unwrap_err());
            assert!(err.contains(needle), "{same_as}: {needle:?} not in {err:?}");
        }
    }

    #[test]
    fn every_shared_run_of_the_shipped_plans_names_a_run_with_its_configuration() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
        let mut plans = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let p = Plan::load(&path).unwrap();
                plans.insert(p.name.clone(), p);
            }
        }
        let mut shared = 0;
        for p in plans.values() {
            for r in p.runs.iter() {
                let Some(other) = &r.same_as else { continue };
                shared += 1;
                let (plan, run) = other.split_once('/').unwrap();
                let owner = &plans[plan];
                let target = owner
                    .run(run)
                    .unwrap_or_else(|| panic!("{}: {other}", p.name));
                assert!(target.same_as.is_none(), "{other} is itself shared");
                let ours = p.run_config(r, 1, &Overrides::default()).unwrap();
                let theirs = owner.run_config(target, 1, &Overrides::default()).unwrap();
                let d = config_differences(&theirs, &ours);
                assert!(d.is_empty(), "{}/{} vs {other}: {d:?}", p.name, r.name);
            }
        }
        assert!(
            shared > 0,
            "the figure plans share Table 3's and Figure 3's runs"
        );
    }

    #[test]
    fn config_differences_name_the_key_and_ignore_speed_and_data_location() {
        let a = TrainConfig::default();
        let mut b = a.clone();
        b.threads = 7;
        b.datasets = PathBuf::from("/elsewhere/datasets");
        b.embeddings = PathBuf::from("/elsewhere/glove.6B.50d.filtered.txt.gz");
        assert!(config_differences(&a, &b).is_empty());
        b.hidden = 100;
        b.lambda.insert("ner".into(), 3.0);
        let d = config_differences(&a, &b);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].starts_with("hidden: plan 300"), "{d:?}");
        assert!(d[1].starts_with("lambda:"), "{d:?}");
        b = a.clone();
        b.embeddings = PathBuf::from("other.txt");
        assert!(config_differences(&a, &b)[0].starts_with("embeddings"));
    }
}
