//! Catalog writes and jobs of an [`Engine`]: taking the data directory's writes, product
//! upserts/patches/deletes, commits, following generations published elsewhere, background
//! rebuilds, going live, rollback.

use super::*;

impl Engine {
    /// Takes the data directory's product writes (one process at a time): removes builds
    /// a crash left behind, indexes change-log entries a crash kept out of the index and
    /// replays the parent generation's writes made during a rebuild. Writes become
    /// searchable within `settings.commit_interval_ms` once [`Engine::start_background`]
    /// runs (at once when it is zero); rebuilds use `settings`' schema and gates.
    pub fn enable_writes(&self, settings: &Settings) -> Result<()> {
        let lock =
            crate::util::try_lock(&self.data_dir.join(".writer.lock"))?.ok_or_else(|| {
                Error::ReadOnly(format!(
                    "another process (a running `shoprank serve`?) owns the writes of {}",
                    self.data_dir.display()
                ))
            })?;
        if let Some(_build) = index::build_lock(&self.data_dir)? {
            index::remove_unfinished(&self.data_dir);
        }
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let (writer, snapshot) = LiveWriter::open(
            &self.data_dir,
            (*self.generation()).clone(),
            self.encoder.clone(),
        )?;
        self.swap(snapshot);
        *live = Some(Writes {
            writer,
            commit_interval: Duration::from_millis(settings.commit_interval_ms),
            settings: settings.clone(),
            _lock: lock,
        });
        Ok(())
    }

    /// Serves `snapshot` (call with `live` held), and the challenger models follow it.
    pub(super) fn swap(&self, snapshot: Generation) {
        let snapshot = Arc::new(snapshot);
        *self.generation.write().unwrap_or_else(|e| e.into_inner()) = snapshot.clone();
        self.follow_models(&snapshot);
    }

    /// Applies product writes durably (acknowledged = in the change log); they are
    /// searchable after the next commit. All or nothing on error.
    pub fn write_products(&self, writes: Vec<ProductWrite>) -> Result<Vec<Outcome>> {
        for (i, w) in writes.iter().enumerate() {
            check_write(w).map_err(|reason| Error::InvalidProduct {
                index: Some(i),
                reason,
            })?;
        }
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let w = live.as_mut().ok_or_else(read_only)?;
        let outcomes = match self.write_shared(w, &writes) {
            Some(shared) => shared?,
            None => w.writer.write(writes)?,
        };
        if w.commit_interval.is_zero() {
            self.commit_pending(w)?;
        }
        Ok(outcomes)
    }

    /// Product records (one object, an array or NDJSON, in the catalog's JSON shape),
    /// validated exactly as `shoprank index` validates a catalog line.
    pub fn parse_products(&self, body: &[u8]) -> Result<Vec<ProductWrite>> {
        let invalid = |index, reason| Error::InvalidProduct { index, reason };
        let values = crate::catalog::json_values(body, "products", MAX_WRITE_BATCH)
            .map_err(|(i, r)| invalid(i, r))?;
        let gen = self.generation();
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let serde_json::Value::Object(map) = v else {
                    return Err(invalid(Some(i), "expected a JSON object".into()));
                };
                Product::from_fields(map, &gen.schema)
                    .map(ProductWrite::Upsert)
                    .map_err(|(field, reason, _)| {
                        invalid(Some(i), format!("field `{field}`: {reason}"))
                    })
            })
            .collect()
    }

    /// Makes pending writes searchable; true when there were any.
    pub fn commit(&self) -> Result<bool> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        match live.as_mut() {
            Some(w) => self.commit_pending(w),
            None => Ok(false),
        }
    }

    /// Commits `w`'s pending writes and serves the new snapshot; true when there were any.
    pub(super) fn commit_pending(&self, w: &mut Writes) -> Result<bool> {
        let snapshot = w.writer.commit()?;
        let committed = snapshot.is_some();
        if let Some(snapshot) = snapshot {
            self.swap(snapshot);
        }
        Ok(committed)
    }

    /// Switches to the generation `CURRENT` names when another process (`shoprank index`)
    /// published one, replaying the writes this process took meanwhile. True on a switch.
    pub fn follow_current(&self) -> Result<bool> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let Some(w) = live.as_mut() else {
            return Ok(false);
        };
        let Some(name) = index::current_name(&self.data_dir)? else {
            return Ok(false);
        };
        if name == self.generation().meta.name {
            return Ok(false);
        }
        if let Some(other) = self.other_model(&name) {
            return Err(Error::Config(format!(
                "generation {name} was encoded by model `{other}`, this process runs `{}`: not switching to it (restart with that model)",
                self.encoder.as_ref().map_or("", |e| e.id())
            )));
        }
        self.commit_pending(w)?;
        let gen = index::open_named(&self.data_dir, &name, self.encoder.as_deref())?;
        let (writer, snapshot) = LiveWriter::open(&self.data_dir, gen, self.encoder.clone())?;
        w.writer = writer;
        self.swap(snapshot);
        tracing::info!(generation = %name, "switched to a generation published by another process");
        Ok(true)
    }

    /// The model of generation `name` when it differs from this process's: its vectors
    /// cannot be searched with this encoder's query vectors, nor extended by its writes.
    fn other_model(&self, name: &str) -> Option<String> {
        let encoder = self.encoder.as_ref()?;
        let path = index::generation_dir(&self.data_dir, name).join("meta.json");
        let meta: index::GenerationMeta =
            serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        meta.model_id.filter(|id| id != encoder.id())
    }

    /// Commits pending writes every commit interval and follows generations published
    /// by other processes, until the engine is dropped.
    pub fn start_background(self: &Arc<Self>) {
        let weak: Weak<Engine> = Arc::downgrade(self);
        let interval = {
            let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            match live.as_ref() {
                Some(w) if !w.commit_interval.is_zero() => w.commit_interval,
                Some(_) => Duration::from_millis(500),
                None => return,
            }
        };
        std::thread::spawn(move || {
            let mut last_follow = Instant::now();
            loop {
                std::thread::sleep(interval);
                let Some(engine) = weak.upgrade() else { return };
                engine.reload_profiles_if_changed();
                engine.reload_rules_if_changed();
                if let Err(e) = engine.commit() {
                    tracing::error!(error = %e, "committing product writes failed; will retry");
                }
                if last_follow.elapsed() >= Duration::from_secs(1) {
                    last_follow = Instant::now();
                    if let Err(e) = engine.follow_current() {
                        tracing::error!(error = %e, "could not switch to the published generation");
                    }
                }
            }
        });
    }

    /// Starts a rebuild from a catalog in the background; the new generation goes live
    /// only after its gates pass, with the writes taken meanwhile replayed into it.
    pub fn reindex(self: &Arc<Self>, spec: ReindexSpec) -> Result<JobStatus> {
        // Writes acknowledged from now on are replayed into the new generation.
        let (settings, parent) = match self.live.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
        {
            Some(w) => (
                w.settings.clone(),
                (w.writer.next().meta.name.clone(), w.writer.last_seq()),
            ),
            None => return Err(read_only()),
        };
        if !spec.catalog.is_file() {
            return Err(Error::param(
                "catalog",
                format!(
                    "{} is not a readable file on the server",
                    spec.catalog.display()
                ),
            ));
        }
        let jobs_dir = self.data_dir.join("jobs");
        std::fs::create_dir_all(&jobs_dir).map_err(|e| Error::io(&jobs_dir, e))?;
        let job = self.jobs.start(&spec.catalog, &jobs_dir)?;
        let errors_file = job.status().errors_file.unwrap_or_default();
        let engine = self.clone();
        let status = job.status();
        // With replicas: the others replay the shared product log from here onto it.
        let position = self.products_position();
        std::thread::spawn(move || {
            let previous = Some(engine.generation().live_count());
            let prepared = crate::jobs::prepare(
                &settings,
                &spec,
                engine.encoder.as_deref(),
                previous,
                &|errors| crate::jobs::write_error_report(&errors_file, errors),
                Some(parent),
                &|p| job.progress(p),
                &|| job.cancelled(),
            );
            let result = prepared.and_then(|prep| {
                job.update(|s| {
                    s.stage = "publish";
                    s.gates = prep.gates.clone();
                    s.generation = Some(prep.built.meta.name.clone());
                    s.invalid_records = prep.skipped;
                });
                if job.cancelled() {
                    return Err(Error::Cancelled);
                }
                engine.go_live(prep.built, prep.candidate)?;
                match &position {
                    Some(offset) => engine.publish_rebuilt(offset),
                    None => Ok(()),
                }
            });
            job.update(|s| match result {
                Ok(()) => s.state = "succeeded",
                Err(e) => {
                    s.state = if matches!(e, Error::Cancelled) {
                        "cancelled"
                    } else {
                        "failed"
                    };
                    if let Error::BadCatalog { count, .. } = &e {
                        s.invalid_records = *count;
                    }
                    tracing::warn!(error = %e, "reindex did not publish");
                    s.error = Some(e.to_string());
                }
            });
        });
        Ok(status)
    }

    /// Publishes a built generation: replays the writes taken since its build started,
    /// switches `CURRENT` and serves it. Searches in flight finish on the old snapshot.
    pub fn go_live(&self, built: index::Built, candidate: Generation) -> Result<()> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let w = live.as_mut().ok_or_else(read_only)?;
        self.commit_pending(w)?;
        let (writer, snapshot) = LiveWriter::open(&self.data_dir, candidate, self.encoder.clone())?;
        index::publish(&self.data_dir, built)?;
        w.writer = writer;
        self.swap(snapshot);
        tracing::info!(generation = %self.generation().meta.name, "new generation is live");
        Ok(())
    }

    /// Makes the previous generation live again, with the writes the rolled-back one
    /// took replayed into it. Returns its name.
    pub fn rollback(&self) -> Result<String> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let w = live.as_mut().ok_or_else(read_only)?;
        let _build = index::build_lock(&self.data_dir)?
            .ok_or_else(|| Error::JobRunning("a build holds the data directory".into()))?;
        let previous = index::previous_name(&self.data_dir)?.ok_or(Error::NoPreviousGeneration)?;
        self.commit_pending(w)?;
        let current = self.generation().meta.name.clone();
        let gen = index::open_named(&self.data_dir, &previous, self.encoder.as_deref())?;
        let (mut writer, _) = LiveWriter::open(&self.data_dir, gen, self.encoder.clone())?;
        writer.inherit(&current, 0)?;
        let snapshot = writer.commit()?.unwrap_or_else(|| writer.next().clone());
        let name = index::rollback(&self.data_dir)?;
        w.writer = writer;
        self.swap(snapshot);
        tracing::info!(generation = %name, "rolled back");
        Ok(name)
    }

    /// A catalog job's status.
    pub fn job(&self, id: &str) -> Result<JobStatus> {
        Ok(self.jobs.get(id)?.status())
    }

    /// Asks a catalog job to stop; the live generation is untouched.
    pub fn cancel_job(&self, id: &str) -> Result<JobStatus> {
        let job = self.jobs.get(id)?;
        job.cancel();
        Ok(job.status())
    }
}
