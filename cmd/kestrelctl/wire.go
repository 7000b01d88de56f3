package main

import "errors"

func runWire(args []string, s stdio) error { return errors.New("not implemented yet") }
