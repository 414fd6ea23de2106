// The bundle's source map (version 3, VLQ mappings), used twice:
//
// - bundleMapper maps "bundle.js:LINE:COL" in build-time messages (a throw
//   while the snapshot evaluates the app's top level) back to the app's files;
// - stackTable encodes the map compactly for the prelude, which maps the
//   stack traces of runtime errors the same way (see prelude.js, mapStack).
const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

function decodeLine(text) {
  const segments = [];
  for (const part of text.split(",")) {
    if (!part) continue;
    const fields = [];
    let value = 0;
    let shift = 0;
    for (const ch of part) {
      const digit = B64.indexOf(ch);
      value += (digit & 31) << shift;
      if (digit & 32) {
        shift += 5;
      } else {
        fields.push(value & 1 ? -(value >>> 1) : value >>> 1);
        value = 0;
        shift = 0;
      }
    }
    segments.push(fields);
  }
  return segments;
}

function encodeValue(n) {
  let value = n < 0 ? (-n << 1) | 1 : n << 1;
  let text = "";
  do {
    let digit = value & 31;
    value >>>= 5;
    if (value > 0) digit |= 32;
    text += B64[digit];
  } while (value > 0);
  return text;
}

// Per generated line (0-based), its segments [genColumn, source, line, column]
// (all 0-based, absolute), in column order.
function decodeMappings(map) {
  const lines = [];
  let source = 0;
  let line = 0;
  let column = 0;
  for (const text of map.mappings.split(";")) {
    let genColumn = 0;
    const row = [];
    for (const fields of decodeLine(text)) {
      genColumn += fields[0];
      if (fields.length >= 4) {
        source += fields[1];
        line += fields[2];
        column += fields[3];
        row.push([genColumn, source, line, column]);
      }
    }
    lines.push(row);
  }
  return lines;
}

// Returns a function "bundle.js:L:C" -> "src/app.js:L:C" (or the input when unmapped).
export function bundleMapper(map, bundleName) {
  const lines = decodeMappings(map);
  const lookup = (l, c) => {
    let best;
    for (const seg of lines[l - 1] ?? []) {
      if (seg[0] <= c - 1) best = seg;
      else break;
    }
    return best && `${map.sources[best[1]]}:${best[2] + 1}:${best[3] + 1}`;
  };
  const escaped = bundleName.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const pattern = new RegExp(`${escaped}:(\\d+):(\\d+)`, "g");
  return (text) => text.replace(pattern, (whole, l, c) => lookup(Number(l), Number(c)) ?? whole);
}

// The lookup table the prelude reads: `lines` holds one entry per bundle
// line, ";"-separated, each a ","-separated list of VLQ segments
// [genColumn, source, line, column]. Unlike a source map's mappings, each
// line starts from zero (the first segment is absolute, the others relative
// to the one before), so the prelude decodes only the lines a stack names.
// A segment that only continues the one before it (same source line, the
// same distance further on in both) is left out: the prelude adds the
// distance from the segment it finds, which gives the same answer.
export function stackTable(map) {
  const out = [];
  for (const row of decodeMappings(map)) {
    let text = "";
    let kept = null;
    let previous = [0, 0, 0, 0];
    for (const seg of row) {
      if (kept && seg[1] === kept[1] && seg[2] === kept[2] && seg[3] - kept[3] === seg[0] - kept[0]) {
        continue;
      }
      if (text) text += ",";
      text += seg.map((value, i) => encodeValue(value - previous[i])).join("");
      previous = seg;
      kept = seg;
    }
    out.push(text);
  }
  while (out.length > 0 && out[out.length - 1] === "") out.pop();
  return out.join(";");
}
