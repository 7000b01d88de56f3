package main

import "errors"

func runKeygen(args []string, s stdio) error { return errors.New("not implemented yet") }

func runConfig(args []string, s stdio) error { return errors.New("not implemented yet") }

func runStatus(args []string, s stdio) error { return errors.New("not implemented yet") }

func runCmd(args []string, s stdio) error { return errors.New("not implemented yet") }
