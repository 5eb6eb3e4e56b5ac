// Strife web console: adds payments to a table marked data-live as they are decided, from
// the server-sent events at that URL. Text only (textContent), never markup. Everything
// works without this script; it only saves a reload.
(function () {
  'use strict';
  var table = document.querySelector('table[data-live]');
  if (!table || !window.EventSource) { return; }
  var body = table.tBodies[0];
  var cell = function (row, text, className) {
    var td = document.createElement('td');
    if (className) { td.className = className; }
    td.textContent = text;
    row.appendChild(td);
    return td;
  };
  var source = new EventSource(table.getAttribute('data-live'));
  source.onmessage = function (event) {
    var payment;
    try { payment = JSON.parse(event.data); } catch (ignored) { return; }
    var row = document.createElement('tr');
    row.id = 'p-' + payment.id;
    var link = document.createElement('a');
    link.href = '/payments/' + encodeURIComponent(payment.id);
    link.textContent = String(payment.id).slice(0, 8);
    cell(row, '').appendChild(link);
    cell(row, payment.created);
    cell(row, payment.from);
    cell(row, payment.to);
    cell(row, payment.amount, 'num');
    cell(row, payment.status);
    cell(row, payment.reason);
    var existing = document.getElementById(row.id);
    if (existing) { existing.parentNode.replaceChild(row, existing); } else { body.insertBefore(row, body.firstChild); }
    var empty = document.getElementById('no-payments');
    if (empty) { empty.parentNode.removeChild(empty); }
  };
})();
