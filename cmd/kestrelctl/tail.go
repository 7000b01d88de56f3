package main

import "errors"

func runTail(args []string, s stdio) error { return errors.New("not implemented yet") }
