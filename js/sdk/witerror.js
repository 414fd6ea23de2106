// Turns what a failed WIT call throws (componentize-js: an error whose
// `payload` is the `err` value, a variant {tag, val}) into a readable Error.
export function witError(what, err) {
  const payload = err?.payload ?? err;
  let text;
  if (payload && typeof payload === "object" && "tag" in payload) {
    text = payload.val === undefined ? payload.tag : `${payload.tag}: ${payload.val}`;
  } else if (payload instanceof Error) {
    text = payload.message;
  } else {
    text = String(payload);
  }
  return new Error(`${what} failed: ${text}`, { cause: err });
}
