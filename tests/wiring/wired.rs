use falsify::model::contract::kind::Hidden;
use falsify::model::contract::{BrickError, Rows};
use falsify::model::pipeline::{Angles, Pass};
use falsify::model::{Layer, Model};

/// One layer's attention half, wired in pass order.
pub fn attention_half<'o>(
    model: &Model,
    pass: &mut Pass<'_, '_>,
    hidden: Rows<'o, Hidden>,
    angles: Angles<'_>,
    layer: &Layer,
    buffers: &mut [Vec<f32>; 6],
) -> Result<Rows<'o, Hidden>, BrickError> {
    let p = &model.pipeline;
    let [h, q, k, v, attn, o] = buffers;
    let normed = pass.apply(&p.attn_norm, Some(0), (hidden.view(), &layer.attn_norm[..], h))?;
    let projections = pass.apply(&p.qkv, Some(0), (normed, layer, q, k, v))?;
    let rotated = pass.apply(&p.rope, Some(0), (projections, angles))?;
    let mixed = pass.apply(&p.attention, Some(0), (rotated, 0, attn))?;
    pass.apply(&p.o_proj, Some(0), (mixed, &layer.wo, o, hidden))
}
