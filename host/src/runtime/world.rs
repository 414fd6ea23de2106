//! Which WASI world a version serves: 0.2 (`wasi:http/incoming-handler`,
//! a fresh instance per request unless reuse is asked for) or 0.3
//! (`wasi:http/handler`, one instance taking many requests at once).
//!
//! A version's world is read from what its component exports, once, at
//! load. This module only tells the worlds apart and holds the linked
//! component of either; how each world serves a request lives in
//! [`crate::runtime::p2`] and [`crate::runtime::p3`].

use wasmtime::Engine;
use wasmtime::component::{Component, InstancePre};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p3::bindings::ServicePre;

use crate::runtime::state::HostState;

/// The export a WASI 0.2 HTTP component has (any 0.2.x).
const P2_HANDLER: &str = "wasi:http/incoming-handler@0.2.";

/// The export a WASI 0.3 HTTP component has (any 0.3.x).
const P3_HANDLER: &str = "wasi:http/handler@0.3.";

/// The WASI world a version serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// WASI 0.2: `wasi:http/incoming-handler`.
    P2,
    /// WASI 0.3: `wasi:http/handler`.
    P3,
}

impl World {
    /// How status, logs and metrics name it.
    pub fn name(self) -> &'static str {
        match self {
            World::P2 => "0.2",
            World::P3 => "0.3",
        }
    }

    /// The world of a component exporting `exports`, or `None` if it
    /// exports no HTTP handler of either. A component exporting both is
    /// served as 0.3, the world that can take several requests at once.
    pub fn of_exports<'a>(exports: impl IntoIterator<Item = &'a str>) -> Option<World> {
        let mut found = None;
        for name in exports {
            if name.starts_with(P3_HANDLER) {
                return Some(World::P3);
            }
            if name.starts_with(P2_HANDLER) {
                found = Some(World::P2);
            }
        }
        found
    }

    /// The world a component's bytes declare by their top-level exports,
    /// read without compiling (a linear scan of the sections), or `None`
    /// if it exports neither handler or cannot be parsed.
    pub fn of_bytes(bytes: &[u8]) -> Option<World> {
        use wasmparser::{Parser, Payload};
        let mut names = Vec::new();
        // Nested modules and components come with their own sections and
        // end; only the outermost component's exports count.
        let mut depth = 0usize;
        for payload in Parser::new(0).parse_all(bytes) {
            match payload.ok()? {
                Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
                Payload::End(_) if depth == 0 => break,
                Payload::End(_) => depth -= 1,
                Payload::ComponentExportSection(exports) if depth == 0 => {
                    for export in exports {
                        names.push(export.ok()?.name.name);
                    }
                }
                _ => {}
            }
        }
        World::of_exports(names)
    }

    /// The world whose engine should compile `bytes`: the world they
    /// declare, else 0.3's engine, which accepts every component-model
    /// feature, so a component of neither world is refused for what it
    /// lacks (the handler) rather than for an async type the 0.2 engine
    /// does not take.
    pub fn engine_for(bytes: &[u8]) -> World {
        World::of_bytes(bytes).unwrap_or(World::P3)
    }

    /// The world of `component`, or the list of what it exports instead
    /// (for the refusal).
    pub fn of(engine: &Engine, component: &Component) -> Result<World, String> {
        let ty = component.component_type();
        let names: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
        World::of_exports(names.iter().copied()).ok_or_else(|| {
            if names.is_empty() {
                "(none)".to_string()
            } else {
                names.join(", ")
            }
        })
    }
}

/// A component linked for its world: what a version instantiates from.
#[derive(Clone)]
pub enum Linked {
    /// A WASI 0.2 HTTP component.
    P2(ProxyPre<HostState>),
    /// A WASI 0.3 HTTP component.
    P3(ServicePre<HostState>),
}

impl Linked {
    /// Bytes of machine code (and its metadata) the compiled component
    /// holds in memory.
    pub fn code_size(&self) -> usize {
        let component = match self {
            Linked::P2(pre) => pre.instance_pre().component(),
            Linked::P3(pre) => pre.instance_pre().component(),
        };
        let range = component.image_range();
        (range.end as usize).saturating_sub(range.start as usize)
    }

    /// Links `pre` as a component of `world`: finds the handler export the
    /// world calls.
    pub fn new(world: World, pre: InstancePre<HostState>) -> wasmtime::Result<Self> {
        Ok(match world {
            World::P2 => Linked::P2(ProxyPre::new(pre)?),
            World::P3 => Linked::P3(ServicePre::new(pre)?),
        })
    }

    /// The world it serves.
    pub fn world(&self) -> World {
        match self {
            Linked::P2(_) => World::P2,
            Linked::P3(_) => World::P3,
        }
    }

    /// The pre-instance, world aside (for lifecycle hooks and checks that
    /// are the same in both worlds).
    pub fn instance_pre(&self) -> &InstancePre<HostState> {
        match self {
            Linked::P2(pre) => pre.instance_pre(),
            Linked::P3(pre) => pre.instance_pre(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_the_worlds_apart_by_export() {
        assert_eq!(
            World::of_exports(["wasi:http/incoming-handler@0.2.6"]),
            Some(World::P2)
        );
        assert_eq!(
            World::of_exports(["wasi:http/handler@0.3.0"]),
            Some(World::P3)
        );
        assert_eq!(
            World::of_exports(["wasi:http/handler@0.3.2", "wasm-host:app/lifecycle@0.1.0"]),
            Some(World::P3)
        );
        // Both: served as 0.3, whatever the order.
        assert_eq!(
            World::of_exports([
                "wasi:http/incoming-handler@0.2.0",
                "wasi:http/handler@0.3.0"
            ]),
            Some(World::P3)
        );
        assert_eq!(World::of_exports(["wasi:cli/run@0.2.0"]), None);
        // A handler of a later, incompatible version is neither.
        assert_eq!(World::of_exports(["wasi:http/handler@0.4.0"]), None);
        assert_eq!(
            World::of_exports(["wasi:http/incoming-handler@0.3.0"]),
            None
        );
    }
}
