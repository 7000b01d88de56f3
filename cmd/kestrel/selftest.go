package main

import "errors"

func runSelftest(args []string, s stdio) error { return errors.New("not implemented yet") }
