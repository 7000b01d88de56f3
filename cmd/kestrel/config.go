package main

import "errors"

func runConfig(args []string, s stdio) error { return errors.New("not implemented yet") }
