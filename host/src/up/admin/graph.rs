//! The drawing of a run's steps as a graph: each step a box placed by a layered
//! (Sugiyama) layout computed here with `rust-sugiyama`, so that the dashboard only draws
//! what the server placed.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use crate::workflow::state::{RunState, StepStatus};

/// The width of a step's box.
pub const NODE_WIDTH: f64 = 168.0;
/// The height of a step's box.
pub const NODE_HEIGHT: f64 = 52.0;
/// The space left around the drawing.
const MARGIN: f64 = 16.0;
/// The space between two layers.
const LAYER_GAP: f64 = 56.0;
/// The space between two boxes of a layer, and between disjoint parts of the graph.
const SPACING: f64 = 28.0;

/// A run's steps, placed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunGraph {
    /// The run.
    pub run: String,
    /// The drawing's width.
    pub width: f64,
    /// The drawing's height.
    pub height: f64,
    /// The steps.
    pub nodes: Vec<GraphNode>,
    /// The dependencies, from a step to the one that waits for it.
    pub edges: Vec<GraphEdge>,
}

/// One step, placed: its box's top-left corner and size.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GraphNode {
    /// The step's name.
    pub step: String,
    /// Where the step is.
    pub status: StepStatus,
    /// The actor's route (`name.X` or `key.M...`).
    pub route: String,
    /// The actor's name, when this host knows it (else the route's key or name).
    pub actor: String,
    /// Left.
    pub x: f64,
    /// Top.
    pub y: f64,
    /// Width.
    pub width: f64,
    /// Height.
    pub height: f64,
}

/// One dependency: `to` waits for `from`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GraphEdge {
    /// The step depended on.
    pub from: String,
    /// The step that depends on it.
    pub to: String,
}

/// Places the steps of `run`.
pub fn layout(run: &RunState) -> RunGraph {
    let names: Vec<&String> = run.steps.keys().collect();
    let index: BTreeMap<&str, u32> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), u32::try_from(i).unwrap_or(u32::MAX)))
        .collect();
    let mut edges = Vec::new();
    let mut pairs = Vec::new();
    for (name, step) in &run.steps {
        for dep in &step.depends {
            if let (Some(&from), Some(&to)) = (index.get(dep.as_str()), index.get(name.as_str())) {
                pairs.push((from, to));
                edges.push(GraphEdge {
                    from: dep.clone(),
                    to: name.clone(),
                });
            }
        }
    }
    let vertices: Vec<(u32, (f64, f64))> = index
        .values()
        .map(|&i| (i, (NODE_WIDTH, NODE_HEIGHT + LAYER_GAP)))
        .collect();
    let config = rust_sugiyama::configure::Config {
        vertex_spacing: SPACING,
        ..Default::default()
    };
    let parts = if vertices.is_empty() {
        Vec::new()
    } else {
        rust_sugiyama::from_vertices_and_edges(&vertices, &pairs, &config)
    };

    // Each disjoint part beside the previous one; coordinates are box centres.
    let mut nodes = Vec::with_capacity(names.len());
    let mut left = MARGIN;
    let mut bottom: f64 = 0.0;
    for (placed, _, _) in parts {
        let min_x = placed
            .iter()
            .map(|(_, (x, _))| *x)
            .fold(f64::INFINITY, f64::min);
        let min_y = placed
            .iter()
            .map(|(_, (_, y))| *y)
            .fold(f64::INFINITY, f64::min);
        let mut right = left;
        for (id, (x, y)) in placed {
            let Some(name) = names.get(id) else { continue };
            let step = &run.steps[*name];
            let node = GraphNode {
                step: (*name).clone(),
                status: step.status,
                route: step.route.clone(),
                actor: step
                    .route
                    .split_once('.')
                    .map_or(step.route.as_str(), |(_, a)| a)
                    .to_string(),
                x: left + (x - min_x),
                y: MARGIN + (y - min_y),
                width: NODE_WIDTH,
                height: NODE_HEIGHT,
            };
            right = right.max(node.x + NODE_WIDTH);
            bottom = bottom.max(node.y + NODE_HEIGHT);
            nodes.push(node);
        }
        left = right + SPACING;
    }
    nodes.sort_by_key(|n| run.steps[&n.step].index);
    RunGraph {
        run: run.id.clone(),
        width: (left - SPACING + MARGIN).max(NODE_WIDTH + 2.0 * MARGIN),
        height: bottom + MARGIN,
        nodes,
        edges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::spec::Workflow;

    fn run_of(yaml: &str) -> RunState {
        use crate::workflow::state::{RunStatus, StepState};
        let w = Workflow::from_yaml(yaml).unwrap();
        let steps = w
            .spec
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let state = StepState::pending(i, s, 1, "name.probe".into());
                (s.name.clone(), state)
            })
            .collect();
        RunState {
            id: "r1".into(),
            workflow: w.spec.name.clone(),
            spec: "spec.x".into(),
            inputs: Default::default(),
            status: RunStatus::Running,
            created_ms: 0,
            finished_ms: None,
            steps,
            outputs: None,
            error: None,
        }
    }

    #[test]
    fn layers_follow_dependencies_and_boxes_do_not_overlap() {
        let run = run_of(
            "version: 1\nname: d\nsteps:\n  - { name: a, actor: p, operation: o }\n  \
             - { name: b, actor: p, operation: o, depends: [a] }\n  \
             - { name: c, actor: p, operation: o, depends: [a] }\n  \
             - { name: d, actor: p, operation: o, depends: [b, c] }\n  \
             - { name: lone, actor: p, operation: o }\n",
        );
        let g = layout(&run);
        assert_eq!(g.nodes.len(), 5);
        assert_eq!(g.edges.len(), 4);
        let at = |s: &str| g.nodes.iter().find(|n| n.step == s).unwrap();
        assert!(at("b").y > at("a").y && at("d").y > at("b").y);
        assert!(
            (at("b").y - at("c").y).abs() < 1e-6,
            "b and c share a layer"
        );
        for (i, m) in g.nodes.iter().enumerate() {
            assert!(m.x >= 0.0 && m.y >= 0.0 && m.x + m.width <= g.width + 1e-6);
            assert!(m.y + m.height <= g.height + 1e-6);
            for n in &g.nodes[i + 1..] {
                let apart = m.x + m.width <= n.x
                    || n.x + n.width <= m.x
                    || m.y + m.height <= n.y
                    || n.y + n.height <= m.y;
                assert!(apart, "{} and {} overlap: {g:?}", m.step, n.step);
            }
        }
    }

    #[test]
    fn a_single_step_is_drawn() {
        let run = run_of("version: 1\nname: d\nsteps:\n  - { name: a, actor: p, operation: o }\n");
        let g = layout(&run);
        assert_eq!(g.nodes.len(), 1);
        assert!(g.edges.is_empty());
    }
}
