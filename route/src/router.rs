//! The routing table of one service port: where each request, and each non-HTTP connection,
//! goes, and which mirrors get a copy of a request.
//!
//! A port always has its app (the workload's own container) and, on top, any number of
//! *personal* intercepts (a non-global [`Filter`]) and at most one *global* intercept. A request
//! goes to the personal intercept whose filter matches it, else to the global intercept, else to
//! the app. A connection that does not speak HTTP cannot be filtered, so it goes to the global
//! intercept if there is one, else to the app.
//!
//! [`Router::add`] keeps the table unambiguous:
//! - a second global intercept on the port is refused;
//! - a personal intercept whose filter [overlaps](Filter::overlaps) another personal one is
//!   refused, so at most one personal intercept matches any request and their order never
//!   matters;
//! - personal and global intercepts coexist: the personal ones take precedence, the global one
//!   replaces the app for everything else.
//!
//! *Mirrors* ([`InterceptMode::Mirror`]) take nothing: a request goes where the rules above
//! send it, and in addition every mirror whose filter matches it ([`Router::mirrors`]; a global
//! mirror matches every request) gets a copy. So mirrors never conflict, with intercepts or with
//! each other: any number of them, from anyone, may share a port. Non-HTTP connections are not
//! mirrored (a byte stream cannot be copied without holding up its caller).
//!
//! Refusals name the holder, so the CLI can say who is in the way. The table is generic over the
//! target handle `T`, so it is plain data: the proxy stores `Arc<dyn InterceptTarget>`, tests
//! store strings.

use std::fmt;

use http::request::Parts;
pub use tether_proto::InterceptMode;

use crate::filter::Filter;

/// Identifies one intercept, assigned by whoever adds it (the manager).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InterceptId(pub u64);

impl fmt::Display for InterceptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One active intercept.
#[derive(Debug, Clone)]
pub struct Intercept<T> {
    /// Its id, unique on the port.
    pub id: InterceptId,
    /// Who holds it, as shown to other users (e.g. `ann@laptop-7`).
    pub owner: String,
    /// The requests it takes (or copies); [global](Filter::is_global) takes everything.
    pub filter: Filter,
    /// Whether it takes its requests or gets a copy of them.
    pub mode: InterceptMode,
    /// Where its traffic goes.
    pub target: T,
}

/// Where a request or connection goes.
#[derive(Debug)]
pub enum Route<'a, T> {
    /// To the workload's own container.
    App,
    /// To this intercept's target.
    Intercept(&'a Intercept<T>),
}

impl<T> Clone for Route<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Route<'_, T> {}

impl<T> PartialEq for Route<'_, T> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Route::App, Route::App) => true,
            (Route::Intercept(a), Route::Intercept(b)) => a.id == b.id,
            _ => false,
        }
    }
}

/// Why an intercept was not added.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddError {
    /// The port already has a global intercept.
    #[error("the port is already intercepted (all traffic) by {holder}")]
    GlobalTaken {
        /// Who holds the global intercept.
        holder: String,
        /// Its id.
        id: InterceptId,
    },
    /// The filter overlaps a personal intercept's.
    #[error("the filter overlaps the intercept of {holder} ({filter})")]
    Overlap {
        /// Who holds the overlapping intercept.
        holder: String,
        /// Its id.
        id: InterceptId,
        /// Its filter, displayed.
        filter: String,
    },
    /// The id is already in use on this port.
    #[error("intercept id {0} is already in use on this port")]
    DuplicateId(InterceptId),
}

/// The routing table of one service port.
#[derive(Debug, Clone)]
pub struct Router<T> {
    global: Option<Intercept<T>>,
    personal: Vec<Intercept<T>>,
    mirrors: Vec<Intercept<T>>,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Self {
            global: None,
            personal: Vec::new(),
            mirrors: Vec::new(),
        }
    }
}

impl<T> Router<T> {
    /// A table that sends everything to the app.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an intercept, unless it conflicts with one already there (see the module docs).
    pub fn add(&mut self, intercept: Intercept<T>) -> Result<(), AddError> {
        if self.get(intercept.id).is_some() {
            return Err(AddError::DuplicateId(intercept.id));
        }
        if intercept.mode == InterceptMode::Mirror {
            self.mirrors.push(intercept);
            return Ok(());
        }
        if intercept.filter.is_global() {
            if let Some(holder) = &self.global {
                return Err(AddError::GlobalTaken {
                    holder: holder.owner.clone(),
                    id: holder.id,
                });
            }
            self.global = Some(intercept);
            return Ok(());
        }
        if let Some(holder) = self
            .personal
            .iter()
            .find(|p| p.filter.overlaps(&intercept.filter))
        {
            return Err(AddError::Overlap {
                holder: holder.owner.clone(),
                id: holder.id,
                filter: holder.filter.to_string(),
            });
        }
        self.personal.push(intercept);
        Ok(())
    }

    /// Removes an intercept; requests already routed to it are not affected.
    pub fn remove(&mut self, id: InterceptId) -> Option<Intercept<T>> {
        if self.global.as_ref().is_some_and(|g| g.id == id) {
            return self.global.take();
        }
        if let Some(index) = self.personal.iter().position(|p| p.id == id) {
            return Some(self.personal.remove(index));
        }
        let index = self.mirrors.iter().position(|m| m.id == id)?;
        Some(self.mirrors.remove(index))
    }

    /// The intercept with this id.
    pub fn get(&self, id: InterceptId) -> Option<&Intercept<T>> {
        self.iter().find(|i| i.id == id)
    }

    /// Every intercept: the global one first, then the personal ones, then the mirrors, each in
    /// the order added.
    pub fn iter(&self) -> impl Iterator<Item = &Intercept<T>> {
        self.global
            .iter()
            .chain(&self.personal)
            .chain(&self.mirrors)
    }

    /// True if no intercept (nor mirror) is active, so everything goes to the app uncopied.
    pub fn is_empty(&self) -> bool {
        self.global.is_none() && self.personal.is_empty() && self.mirrors.is_empty()
    }

    /// Where a request with this head goes.
    pub fn route(&self, request: &Parts) -> Route<'_, T> {
        self.personal
            .iter()
            .find(|p| p.filter.matches(request))
            .or(self.global.as_ref())
            .map_or(Route::App, Route::Intercept)
    }

    /// The mirrors that get a copy of a request with this head, in the order added (whatever
    /// its [route](Router::route)).
    pub fn mirrors<'a>(&'a self, request: &'a Parts) -> impl Iterator<Item = &'a Intercept<T>> {
        self.mirrors.iter().filter(|m| m.filter.matches(request))
    }

    /// True if the port has a mirror (so a request may need copying).
    pub fn has_mirrors(&self) -> bool {
        !self.mirrors.is_empty()
    }

    /// Where a connection that is not HTTP goes.
    pub fn route_connection(&self) -> Route<'_, T> {
        self.global.as_ref().map_or(Route::App, Route::Intercept)
    }
}

#[cfg(test)]
mod tests;
