// The search page: asks /api/search and draws one card a result. Every string from the server goes
// into the page through textContent or setAttribute, never as HTML, so file names cannot inject.
// <body> carries data-ready="true" (and image counts) once the results and their images settled.
// A search is text (?q=), a row ("more like this": ?like=ROW) or an uploaded file; filters travel as
// query parameters; "more results" asks the next page (offset) of the same ranking.
"use strict";

const form = document.getElementById("search-form");
const queryInput = document.getElementById("query");
const kInput = document.getElementById("k");
const uploadInput = document.getElementById("upload");
const statusLine = document.getElementById("status");
const resultsBox = document.getElementById("results");
const FILTERS = {
  under: "f-under",
  min_duration: "f-min-duration",
  max_duration: "f-max-duration",
  modified_after: "f-modified-after",
  modified_before: "f-modified-before",
  min_score: "f-min-score",
};
let current = null; // {params, upload} of the search shown, for its next page

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function seconds(value) {
  return String(Number(value.toFixed(3)));
}

function mediaFragment(start, end) {
  if (start === null && end === null) return "";
  return end === null ? "#t=" + seconds(start || 0) : "#t=" + seconds(start || 0) + "," + seconds(end);
}

function clock(value) {
  const tenths = Math.round(value * 10);
  const whole = Math.floor(tenths / 10);
  const hours = Math.floor(whole / 3600);
  const minutes = Math.floor((whole % 3600) / 60);
  const secs = String(whole % 60).padStart(2, "0");
  const text = hours ? hours + ":" + String(minutes).padStart(2, "0") + ":" + secs : minutes + ":" + secs;
  return tenths % 10 ? text + "." + (tenths % 10) : text;
}

function timeRange(start, end) {
  if (start === null && end === null) return "";
  return clock(start || 0) + "\u2013" + (end === null ? "end" : clock(end));
}

function countImages() {
  const all = resultsBox.querySelectorAll("img.keyframe");
  const loaded = resultsBox.querySelectorAll('img.keyframe[data-state="loaded"]').length;
  const failed = resultsBox.querySelectorAll('img.keyframe[data-state="failed"]').length;
  document.body.dataset.imagesLoaded = String(loaded);
  document.body.dataset.imagesFailed = String(failed);
  document.body.dataset.imagesTotal = String(all.length);
  document.body.dataset.ready = String(loaded + failed === all.length);
}

function keyframe(url, number, path) {
  const image = element("img", "keyframe");
  image.alt = "keyframe " + number + " of " + path;
  image.decoding = "async";
  const settle = () => {
    image.dataset.state = image.naturalWidth > 0 ? "loaded" : "failed";
    countImages();
  };
  image.addEventListener("load", settle);
  image.addEventListener("error", settle);
  image.src = url;
  return image;
}

function card(result) {
  // display_path (bytes of a name that are not UTF-8 shown as \xNN) comes where it differs from path
  const name = result.display_path || result.path;
  const item = element("li", "card");
  item.dataset.rank = String(result.rank);
  item.dataset.row = String(result.row);
  item.dataset.score = result.score.toFixed(6);
  const box = element("div", "player-box");
  const player = element("video", "player");
  player.preload = "none";
  if (result.thumbnails.length) player.poster = result.thumbnails[0];
  player.src = result.media + mediaFragment(result.start_s, result.end_s);
  const play = element("button", "play", "\u25b6");
  play.type = "button";
  play.setAttribute("aria-label", "play " + name);
  play.addEventListener("click", () => {
    player.controls = true; // native controls come with the first click: idle control bars are noise
    play.hidden = true;
    player.play();
  });
  box.append(player, play);
  item.append(box);
  if (result.thumbnails.length) {
    const strip = element("div", "strip");
    result.thumbnails.forEach((url, n) => strip.append(keyframe(url, n + 1, name)));
    item.append(strip);
  } else {
    item.append(element("div", "no-thumbnails", "no thumbnails"));
  }
  const meta = element("div", "meta");
  meta.append(element("span", "rank", "#" + result.rank));
  const score = element("span", "score", result.score.toFixed(4));
  score.title = "cosine similarity";
  meta.append(score);
  const span = timeRange(result.start_s, result.end_s);
  if (span) meta.append(element("span", "range", span));
  item.append(meta);
  const path = element("p", "path", name);
  path.title = name;
  item.append(path);
  const more = element("button", "more-like", "more like this");
  more.type = "button";
  more.dataset.row = String(result.row);
  more.addEventListener("click", () => {
    const params = searchParams({ like: String(result.row) });
    window.history.pushState(null, "", "/?" + params);
    search(params);
  });
  item.append(more);
  return item;
}

function render(reply, append) {
  let section = resultsBox.querySelector("section.query");
  if (!append || !section) {
    section = element("section", "query");
    section.dataset.query = reply.query;
    const heading = element("h2");
    heading.append("Results for ", element("span", "query-text", reply.query), " ");
    heading.append(element("span", "count", "(" + reply.total + " in " + reply.took_ms + " ms)"));
    section.append(heading);
    resultsBox.replaceChildren(section);
  }
  let list = section.querySelector("ol.results");
  if (reply.results.length && !list) {
    list = element("ol", "results");
    section.append(list);
  }
  reply.results.forEach((result) => list.append(card(result)));
  if (!reply.total) section.append(element("p", "empty", reply.filters ? "No video passes the filters." : "No results: the index is empty."));
  section.querySelectorAll("button.more-results").forEach((button) => button.remove());
  if (reply.next_offset !== null && reply.next_offset !== undefined) {
    const next = element("button", "more-results", "more results");
    next.type = "button";
    next.addEventListener("click", () => nextPage(reply.next_offset));
    section.append(next);
  }
  countImages();
}

function showStatus(text, isError) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", Boolean(isError));
}

function searchParams(base) {
  // base: {q} or {like}; k and the filters come from the form
  const params = new URLSearchParams(base);
  params.set("k", kInput.value);
  for (const [name, id] of Object.entries(FILTERS)) {
    const value = document.getElementById(id).value.trim();
    if (value) params.set(name, value);
  }
  return params;
}

async function ask(params, upload, append) {
  document.body.dataset.ready = "false";
  showStatus(upload ? "Reading the file\u2026" : "Searching\u2026");
  try {
    const options = { credentials: "same-origin" };
    if (upload) {
      options.method = "POST";
      options.body = upload;
      options.headers = { "content-type": upload.type || "application/octet-stream" };
    }
    const reply = await fetch("/api/search?" + params, options);
    const body = await reply.json();
    if (!reply.ok) {
      if (!append) resultsBox.replaceChildren();
      showStatus(body.error || "The search failed (" + reply.status + ").", true);
      document.body.dataset.ready = "true";
      return;
    }
    showStatus("");
    current = { params: params, upload: upload };
    render(body, append);
  } catch (error) {
    showStatus("The service did not answer: " + error.message, true);
    document.body.dataset.ready = "true";
  }
}

function search(params, upload) {
  return ask(params, upload || null, false);
}

function nextPage(offset) {
  if (!current) return;
  const params = new URLSearchParams(current.params);
  params.set("offset", String(offset));
  ask(params, current.upload, true);
}

function chooseK(value) {
  // A k from the address that the menu lacks (e.g. ?k=6) gets its own entry; the server checks it.
  if (!Array.from(kInput.options).some((option) => option.value === value)) {
    kInput.append(new Option(value + " results", value));
  }
  kInput.value = value;
}

function fromAddress() {
  const params = new URLSearchParams(window.location.search);
  const query = params.get("q") || "";
  const like = params.get("like");
  queryInput.value = query;
  if (params.get("k")) chooseK(params.get("k"));
  let filtered = false;
  for (const [name, id] of Object.entries(FILTERS)) {
    document.getElementById(id).value = params.get(name) || "";
    filtered = filtered || Boolean(params.get(name));
  }
  if (filtered) document.getElementById("filters-box").open = true;
  if (like !== null) {
    search(searchParams({ like: like }));
  } else if (query.trim()) {
    search(searchParams({ q: query }));
  } else {
    resultsBox.replaceChildren();
    document.body.dataset.ready = "true";
  }
}

async function showInfo() {
  const reply = await fetch("/api/info", { credentials: "same-origin" });
  if (!reply.ok) return;
  const info = await reply.json();
  const details = document.getElementById("details");
  const parts = [info.index && "index " + info.index, info.rows + " rows", info.model && "model " + info.model];
  details.replaceChildren(...parts.filter(Boolean).map((text) => element("span", "", text)));
  const caution = document.getElementById("caution");
  caution.textContent = info.caution ? "Caution: " + info.caution : "";
  caution.hidden = !info.caution;
  queryInput.maxLength = info.max_query_chars;
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const params = searchParams({ q: queryInput.value });
  window.history.pushState(null, "", "/?" + params);
  search(params);
});
uploadInput.addEventListener("change", () => {
  const file = uploadInput.files[0];
  if (!file) return;
  search(searchParams({}), file);
});
window.addEventListener("popstate", fromAddress);
showInfo();
fromAddress();
