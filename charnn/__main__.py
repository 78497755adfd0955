from charnn.cli import main

main(prog_name="charnn")  # the same name (and completion variable) as the console script
