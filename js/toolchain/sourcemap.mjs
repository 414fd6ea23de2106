// Maps "bundle.js:LINE:COL" in build-time messages (a throw while the
// snapshot evaluates the app's top level) back to the app's own files,
// with the bundle's source map (version 3, VLQ mappings).
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

// Returns a function "bundle.js:L:C" -> "src/app.js:L:C" (or the input when unmapped).
export function bundleMapper(map, bundleName) {
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
