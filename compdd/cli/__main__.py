from compdd.cli import main

main(prog_name="compdd")
