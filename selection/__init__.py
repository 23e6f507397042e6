"""Training-data selection: IFD scores (selection/ifd.py), reading and writing samples in their own format
(selection/samples.py). scripts/select_data.py is the command."""
