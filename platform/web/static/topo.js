// A TopoJSON (https://github.com/topojson/topojson-specification) decoder
// for the embedded world-atlas land outline: quantized, delta-encoded arcs
// to GeoJSON rings. Enough for Polygon, MultiPolygon and
// GeometryCollection, which is what land-110m.json holds.
function topoToGeo(topo, name) {
  var tf = topo.transform, arcs = topo.arcs.map(function (arc) {
    var x = 0, y = 0;
    return arc.map(function (p) {
      if (tf) { x += p[0]; y += p[1]; return [x * tf.scale[0] + tf.translate[0], y * tf.scale[1] + tf.translate[1]]; }
      return p;
    });
  });
  function ring(idx) {
    var out = [];
    idx.forEach(function (i) {
      var a = i < 0 ? arcs[~i].slice().reverse() : arcs[i];
      a.forEach(function (p, k) { if (k > 0 || out.length === 0) out.push(p); });
    });
    return out;
  }
  function geom(g) {
    if (g.type === 'Polygon') return { type: 'Polygon', coordinates: g.arcs.map(ring) };
    if (g.type === 'MultiPolygon') return { type: 'MultiPolygon', coordinates: g.arcs.map(function (p) { return p.map(ring); }) };
    if (g.type === 'GeometryCollection') return { type: 'GeometryCollection', geometries: g.geometries.map(geom) };
    return null;
  }
  return { type: 'Feature', properties: {}, geometry: geom(topo.objects[name]) };
}
