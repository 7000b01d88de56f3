package wire

import (
	"encoding/json"
	"time"
)

func floatsOf(line []byte) (fixFloats, error) {
	var v struct {
		Time  string   `json:"time"`
		Lat   float64  `json:"lat"`
		Lon   float64  `json:"lon"`
		Alt   *float64 `json:"alt"`
		Speed *float64 `json:"speed"`
		Track *float64 `json:"track"`
		Mode  float64  `json:"mode"`
	}
	if err := json.Unmarshal(line, &v); err != nil {
		return fixFloats{}, err
	}
	tm, err := time.Parse(time.RFC3339Nano, v.Time)
	if err != nil {
		return fixFloats{}, err
	}
	return fixFloats{time: tm.UTC().Format(timeLayout), lat: v.Lat, lon: v.Lon, alt: v.Alt, speed: v.Speed, track: v.Track, mode: v.Mode}, nil
}
