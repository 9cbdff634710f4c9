//! Making the store's files say what imaged's records say, in an order that keeps every reader's view
//! consistent, and deciding which layers must stay because runtimes' containers use them.
//!
//! One sync, under the bridge's mutex:
//! 1. every layer the images need gets its directory, then `layers.json` lists the old and new layers;
//! 2. every image gets its big data, then `images.json` lists exactly the recorded images;
//! 3. layers no image needs any more leave `layers.json` (then their directories go), except those the
//!    runtimes' containers or images use, read from the primary stores under their locks.
//!
//! So at every moment each listed image's layers are listed, and each listed layer's directory exists.
//! The layers the store lists that no image record protects (those kept for containers, those a failed
//! sync could not unlist) are leased, so imaged's layer store keeps them; a layer that leaves the listing
//! loses its lease and is handed back for deletion.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{self, Read};
use std::path::PathBuf;

use super::files::{Files, TMP_PREFIX, remove_any};
use super::layout::{self, ImageJson, LayerFacts, LayerJson, Plan};
use super::primary;
use crate::digest::Digest;
use crate::lease::{Item, Lease};
use crate::metadata::ImageRecord;
use crate::stores::Stores;

/// The bridge's view of its files and what it holds.
pub struct State {
    /// The files.
    pub files: Files,
    /// The runtimes' own stores.
    pub primary_roots: Vec<PathBuf>,
    /// What `layers.json` lists, by id.
    pub layers: BTreeMap<String, LayerJson>,
    /// What `images.json` lists, by id.
    pub images: BTreeMap<String, ImageJson>,
    /// Listed layers that the primary stores use (by id), as last read.
    pub held: BTreeSet<String>,
    /// Check every file against the plan at the next sync (at start, after a failure).
    pub verify: bool,
    links: HashMap<String, String>,
    uses: primary::Uses,
    facts: HashMap<Digest, LayerFacts>,
    lease: Option<Lease>,
    leased: BTreeSet<Digest>,
}

impl State {
    /// The state of the store in `files`, as its files say.
    pub fn read(files: Files, primary_roots: Vec<PathBuf>) -> State {
        let layers = files.read_layers().into_iter().map(|l| (l.id.clone(), l)).collect();
        let images = files.read_images().into_iter().map(|i| (i.id.clone(), i)).collect();
        State {
            files,
            primary_roots,
            layers,
            images,
            held: BTreeSet::new(),
            verify: true,
            links: HashMap::new(),
            uses: primary::Uses::default(),
            facts: HashMap::new(),
            lease: None,
            leased: BTreeSet::new(),
        }
    }

    /// Brings the files in line with the records (see the module doc); `refresh_holds` reads the primary
    /// stores even when no layer leaves. Returns the layers no longer leased, to be deleted if nothing else
    /// needs them. Whatever happens, every layer the store lists is leased afterwards.
    pub fn sync(&mut self, stores: &Stores, refresh_holds: bool) -> io::Result<Vec<Digest>> {
        let records = stores.metadata.list();
        let result = self.sync_files(stores, &records, refresh_holds);
        if result.is_err() {
            self.verify = true;
        }
        let released = self.protect_listed(stores);
        result.map(|()| released)
    }

    /// The ids of the images whose top layer the primary stores use (as of the last sync).
    pub fn images_in_use(&self, records: &[std::sync::Arc<ImageRecord>]) -> HashSet<Digest> {
        records
            .iter()
            .filter(|r| {
                layout::layer_ids(r.layers.iter().map(|l| l.diff_id))
                    .last()
                    .is_some_and(|top| self.held.contains(top))
            })
            .map(|r| r.id)
            .collect()
    }

    fn sync_files(
        &mut self,
        stores: &Stores,
        records: &[std::sync::Arc<ImageRecord>],
        refresh: bool,
    ) -> io::Result<()> {
        for rec in records {
            for (chain, layer) in rec.chain_ids().iter().zip(&rec.layers) {
                if !self.facts.contains_key(chain)
                    && let Some(f) = facts_of(stores, chain, layer)
                {
                    self.facts.insert(*chain, f);
                }
            }
        }
        let plan = layout::plan(records, |c| self.facts.get(c).cloned());
        for id in &plan.skipped {
            tracing::warn!(image = %id, "containers-storage: a layer of the image is missing; not listed");
        }
        self.add_layers(stores, &plan)?;
        self.set_images(stores, &plan)?;
        let leaving: Vec<String> = self
            .layers
            .keys()
            .filter(|id| !plan.layers.contains_key(*id))
            .cloned()
            .collect();
        if !leaving.is_empty() || refresh || self.verify {
            self.drop_layers(&plan)?;
        }
        if self.verify {
            self.remove_leftovers()?;
            self.verify = false;
        }
        Ok(())
    }

    fn add_layers(&mut self, stores: &Stores, plan: &Plan) -> io::Result<()> {
        let mut union = self.layers.clone();
        for (id, pl) in &plan.layers {
            let fs_dir = stores.layers.fs_dir(&pl.chain);
            let fresh = self.layers.get(id) != Some(&pl.json);
            if (fresh || self.verify) && !self.files.layer_dir_is(pl, &fs_dir) {
                self.files.write_layer_dir(pl, &fs_dir)?;
            }
            self.links.insert(id.clone(), pl.link.clone());
            union.insert(id.clone(), pl.json.clone());
        }
        if union != self.layers {
            self.files.write_layers(&union.values().collect::<Vec<_>>())?;
            self.layers = union;
        }
        Ok(())
    }

    fn set_images(&mut self, stores: &Stores, plan: &Plan) -> io::Result<()> {
        for (id, pi) in &plan.images {
            let fresh = self.images.get(id) != Some(&pi.json);
            let sizes: Vec<(String, u64)> = pi.big_data.iter().map(|(k, d)| (k.clone(), d.size)).collect();
            if (fresh || self.verify) && !self.files.big_data_is(id, &sizes) {
                let mut items = Vec::with_capacity(pi.big_data.len());
                for (key, desc) in &pi.big_data {
                    let data = stores
                        .content
                        .read(&desc.digest, desc.size)
                        .map_err(|e| io::Error::other(format!("image {id}: {e}")))?;
                    items.push((key.clone(), data));
                }
                self.files.write_big_data(id, &items)?;
            }
        }
        let images: BTreeMap<String, ImageJson> =
            plan.images.iter().map(|(k, p)| (k.clone(), p.json.clone())).collect();
        if images != self.images {
            self.files.write_images(&images.values().collect::<Vec<_>>())?;
            let gone: Vec<String> = self
                .images
                .keys()
                .filter(|id| !images.contains_key(*id))
                .cloned()
                .collect();
            self.images = images;
            for id in gone {
                self.files.remove_big_data(&id)?;
            }
        }
        Ok(())
    }

    /// Step 3: under the primary stores' locks, unlists the layers no image needs and no runtime uses.
    fn drop_layers(&mut self, plan: &Plan) -> io::Result<()> {
        let (_locks, uses) = primary::read(&self.primary_roots, self.files.lock_timeout)?;
        let ids: Vec<String> = self.layers.keys().cloned().collect();
        for id in &ids {
            self.link_of(id);
        }
        let mut held = BTreeSet::new();
        for (id, layer) in &self.layers {
            let link = self.links.get(id);
            if uses.layer_ids.contains(id) || link.is_some_and(|l| uses.links.contains(l)) {
                // The layers below are used too (a lower chain lists them, an image needs them).
                let mut next = Some(layer);
                while let Some(l) = next.filter(|l| held.insert(l.id.clone())) {
                    next = self.layers.get(&l.parent);
                }
            }
        }
        self.held = held;
        self.uses = uses;
        let kept: BTreeMap<String, LayerJson> = self
            .layers
            .iter()
            .filter(|(id, _)| plan.layers.contains_key(*id) || self.held.contains(*id))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if kept != self.layers {
            self.files.write_layers(&kept.values().collect::<Vec<_>>())?;
            let gone: Vec<String> = self
                .layers
                .keys()
                .filter(|id| !kept.contains_key(*id))
                .cloned()
                .collect();
            self.layers = kept;
            for id in gone {
                let link = self.link_of(&id).unwrap_or_default();
                self.files.remove_layer_dir(&id, &link)?;
                self.links.remove(&id);
            }
        }
        Ok(())
    }

    /// The link name of listed layer `id`: known from the plan, or read from its `link` file.
    fn link_of(&mut self, id: &str) -> Option<String> {
        if let Some(l) = self.links.get(id) {
            return Some(l.clone());
        }
        let l = std::fs::read_to_string(self.files.overlay().join(id).join("link")).ok()?;
        self.links.insert(id.to_string(), l.clone());
        Some(l)
    }

    /// Removes what no listing names: directories of unlisted layers and images, links to nothing, and
    /// leftovers of interrupted writes.
    fn remove_leftovers(&mut self) -> io::Result<()> {
        let overlay = self.files.overlay();
        let mut listed: HashSet<String> = self
            .layers
            .keys()
            .filter_map(|id| self.links.get(id).cloned())
            .collect();
        for name in Files::entries(&overlay)? {
            if self.layers.contains_key(&name) {
                continue;
            }
            // A directory no listing names but a runtime's container uses (the listing was lost): left as
            // it is, so the container keeps running.
            let link = std::fs::read_to_string(overlay.join(&name).join("link")).unwrap_or_default();
            if self.uses.layer_ids.contains(&name) || self.uses.links.contains(&link) {
                tracing::warn!(layer = %name, "containers-storage: an unlisted layer is in use by a runtime; kept");
                listed.insert(link);
                continue;
            }
            remove_any(&overlay.join(&name))?;
        }
        let links = self.files.links();
        for name in Files::entries(&links)? {
            if name.starts_with(TMP_PREFIX) || !listed.contains(&name) {
                remove_any(&links.join(&name))?;
            }
        }
        let images = self.files.images_dir();
        for name in Files::entries(&images)? {
            if !self.images.contains_key(&name) {
                remove_any(&images.join(&name))?;
            }
        }
        for dir in [self.files.layers_dir(), self.files.images_dir()] {
            for name in Files::entries(&dir)? {
                if name.starts_with(TMP_PREFIX) {
                    remove_any(&dir.join(&name))?;
                }
            }
        }
        Ok(())
    }

    /// Leases every listed layer, recorded or not; returns the chains that lost their lease.
    ///
    /// Recorded layers too: a removal takes its record out before it tells the bridge, and in between
    /// another deletion (a removal of an image sharing the layer, GC, the start's sweep) would find a
    /// layer that runtimes still read, or that a container sits on, protected by nothing.
    fn protect_listed(&mut self, stores: &Stores) -> Vec<Digest> {
        let want: BTreeSet<Digest> = self.layers.values().filter_map(LayerJson::chain).collect();
        if want == self.leased {
            return Vec::new();
        }
        let mut lease = stores.leases.lease();
        for c in &want {
            lease.add(Item::Snapshot(*c));
        }
        // The new lease is taken before the old one goes: nothing kept is unprotected in between.
        self.lease = Some(lease);
        let released = self.leased.difference(&want).copied().collect();
        self.leased = want;
        released
    }
}

/// What the layer store records about layer `chain` (its size measured from `layer`'s blob, and recorded,
/// if the store predates recording it).
fn facts_of(stores: &Stores, chain: &Digest, layer: &crate::metadata::LayerRecord) -> Option<LayerFacts> {
    let meta = stores.layers.meta(chain)?;
    let diff_size = match meta.diff_size {
        Some(n) => n,
        None => {
            let path = stores.content.blob_path(&layer.blob.digest);
            match tar_size(&path, &layer.blob.media_type) {
                Ok(n) => {
                    if let Err(e) = stores.layers.record_diff_size(chain, n) {
                        tracing::warn!(layer = %chain, error = %e, "cannot record the layer's size");
                    }
                    n
                }
                Err(e) => {
                    tracing::warn!(layer = %chain, blob = %path.display(), error = %e, "cannot measure the layer's size");
                    return None;
                }
            }
        }
    };
    Some(LayerFacts {
        link: meta.link?,
        created_ns: meta.created_ns,
        diff_size,
    })
}

/// The size of the tar in a layer blob.
fn tar_size(path: &std::path::Path, media_type: &str) -> io::Result<u64> {
    use crate::manifest::Compression;
    let file = io::BufReader::new(std::fs::File::open(path)?);
    let mut reader: Box<dyn Read> = match crate::manifest::layer_compression(media_type) {
        Some(Compression::Gzip) => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Some(Compression::Zstd) => Box::new(zstd::stream::read::Decoder::with_buffer(file)?),
        Some(Compression::None) | None => Box::new(file),
    };
    io::copy(&mut reader, &mut io::sink())
}
