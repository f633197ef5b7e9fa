// Sorting and filtering of the leaderboard table, in the page itself: no library, no server, no network.
// A header button sorts by its column (numbers by the cell's data-sort, missing numbers last; an accuracy
// highest first), a second click reverses; the inputs and menus above the table hide the rows that do
// not match, as they are typed in or changed.
(function () {
  "use strict";
  var table = document.getElementById("board");
  if (!table) return;
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var filters = Array.prototype.slice.call(document.querySelectorAll("[data-filter]"));
  var count = document.getElementById("count");

  function key(row, index, numeric) {
    var cell = row.cells[index];
    if (!numeric) return cell.textContent.trim().toLowerCase();
    var text = cell.getAttribute("data-sort");
    return text === "" || text === null ? null : parseFloat(text);
  }

  function sortBy(index) {
    var header = headers[index];
    var numeric = header.hasAttribute("data-numeric");
    var current = header.getAttribute("aria-sort");
    var ascending = current ? current !== "ascending" : !header.hasAttribute("data-higher-first");
    var sign = ascending ? 1 : -1;
    var sorted = rows.slice().sort(function (a, b) {
      var x = key(a, index, numeric), y = key(b, index, numeric);
      if (x === null || y === null) return (x === null) - (y === null);  // missing numbers last, either way
      return sign * (x < y ? -1 : x > y ? 1 : 0);  // a stable sort keeps ties in their order
    });
    headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    sorted.forEach(function (row) { body.appendChild(row); });
  }

  function matches(row, filter) {
    var wanted = filter.value.trim().toLowerCase();
    var value = (row.getAttribute("data-" + filter.getAttribute("data-filter")) || "").toLowerCase();
    if (!wanted) return true;
    return filter.tagName === "SELECT" ? value === wanted : value.indexOf(wanted) !== -1;
  }

  function applyFilters() {
    var shown = 0;
    rows.forEach(function (row) {
      row.hidden = !filters.every(function (filter) { return matches(row, filter); });
      if (!row.hidden) shown += 1;
    });
    count.textContent = shown + " of " + rows.length + " rows";
  }

  headers.forEach(function (header, index) {
    header.querySelector("button").addEventListener("click", function () { sortBy(index); });
  });
  filters.forEach(function (filter) {
    filter.addEventListener("input", applyFilters);
    filter.addEventListener("change", applyFilters);  // a menu changed by keyboard or script, a field cleared
  });
  applyFilters();
})();
